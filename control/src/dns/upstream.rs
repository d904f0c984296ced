//! Forwarding a query to the host's resolvers and taking their answer.
//!
//! Each forward tries the upstreams in order, each for at most [`UPSTREAM_TIMEOUT`], all of
//! them within [`FORWARD_DEADLINE`]. It goes over the transport the client used: UDP queries
//! over UDP (a truncated answer is relayed as is, and the client retries over TCP), TCP
//! queries over TCP. Every forward has a fresh socket (so a fresh source port) and a fresh
//! random ID, and an answer is taken only if it is a well-formed response with that ID and
//! the same question; over UDP anything else is ignored and the wait goes on, so a spoofer
//! must guess port and ID and cannot cut the wait short. The relayed answer carries the
//! client's own ID.
//!
//! The sockets are made by the forwarding thread, so they live in the namespace of the
//! daemon that started the resolver, never in the overlay namespace.

use super::message::{self, Query};
use super::wait::{self, FrameError, Stop, Waited};
use rustix::event::PollFlags;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Longest wait for one upstream.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a forward may take over all upstreams.
pub const FORWARD_DEADLINE: Duration = Duration::from_secs(5);
/// Most `nameserver` lines taken from resolv.conf, as glibc (`MAXNS`).
pub const MAX_UPSTREAMS: usize = 3;

/// The transport a query came over and is forwarded over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

/// Why a forward gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForwardError {
    /// No upstream answered in time (or there is none).
    NoAnswer,
    /// The resolver is stopping.
    Stopped,
}

/// Why one upstream gave no answer.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("no answer in time")]
    TimedOut,
    #[error("stopping")]
    Stopped,
    #[error("an answer that does not match the query")]
    Mismatch,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The upstream servers named by the `nameserver` lines of a resolv.conf, on port 53: IPv4,
/// IPv6, and IPv6 with a numeric zone (`fe80::1%2`); a zone given by interface name is
/// skipped. At most [`MAX_UPSTREAMS`], in order.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            nameserver(words.next()?)
        })
        .take(MAX_UPSTREAMS)
        .collect()
}

fn nameserver(word: &str) -> Option<SocketAddr> {
    if let Ok(v4) = word.parse::<Ipv4Addr>() {
        return Some(SocketAddr::from((v4, 53)));
    }
    let (addr, zone) = match word.split_once('%') {
        Some((addr, zone)) => (addr, Some(zone)),
        None => (word, None),
    };
    let v6 = addr.parse::<Ipv6Addr>().ok()?;
    let scope = match zone {
        Some(zone) => zone.parse::<u32>().ok()?,
        None => 0,
    };
    Some(SocketAddr::V6(SocketAddrV6::new(v6, 53, 0, scope)))
}

/// Forwards `bytes` (the client's message, which reads as `query`) to `upstreams` in order
/// and returns the first matching answer, with the client's ID.
pub(crate) fn forward(
    bytes: &[u8],
    query: &Query,
    upstreams: &[SocketAddr],
    transport: Transport,
    stop: &Stop,
) -> Result<Vec<u8>, ForwardError> {
    let deadline = Instant::now() + FORWARD_DEADLINE;
    let id = match random_id() {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "no random ID for a forwarded DNS query");
            return Err(ForwardError::NoAnswer);
        }
    };
    let mut message = bytes.to_vec();
    message[..2].copy_from_slice(&id.to_be_bytes());
    for &upstream in upstreams {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let until = deadline.min(now + UPSTREAM_TIMEOUT);
        let result = match transport {
            Transport::Udp => exchange_udp(upstream, &message, query, until, stop),
            Transport::Tcp => exchange_tcp(upstream, &message, query, until, stop),
        };
        match result {
            Ok(reply) => return Ok(reply),
            Err(ExchangeError::Stopped | ExchangeError::Frame(FrameError::Stopped)) => {
                return Err(ForwardError::Stopped)
            }
            Err(e) => {
                tracing::debug!(%upstream, name = %query.question.name, error = %e, "upstream gave no answer");
            }
        }
    }
    Err(ForwardError::NoAnswer)
}

fn random_id() -> io::Result<u16> {
    let mut bytes = [0u8; 2];
    let got = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())?;
    if got != bytes.len() {
        return Err(io::Error::other("getrandom gave too few bytes"));
    }
    Ok(u16::from_ne_bytes(bytes))
}

/// `reply` with the client's ID, if it answers `query` as forwarded with `id`: a response
/// with that ID and the same question, or with no question and an error code.
fn relayable(reply: &[u8], id: u16, query: &Query) -> Option<Vec<u8>> {
    let response = message::parse_response(reply).ok()?;
    if response.header.id != id {
        return None;
    }
    match &response.question {
        Some(question) if *question == query.question => {}
        None if response.header.rcode() != 0 => {}
        _ => return None,
    }
    let mut relayed = reply.to_vec();
    relayed[..2].copy_from_slice(&query.id.to_be_bytes());
    Some(relayed)
}

/// The ID `message` carries.
fn id_of(message: &[u8]) -> u16 {
    u16::from_be_bytes([message[0], message[1]])
}

/// Sends `message` (`query` with another ID) to `upstream` over UDP and returns the first
/// datagram that answers it by `deadline`, relayable; what does not answer it is ignored.
fn exchange_udp(
    upstream: SocketAddr,
    message: &[u8],
    query: &Query,
    deadline: Instant,
    stop: &Stop,
) -> Result<Vec<u8>, ExchangeError> {
    let local = match upstream {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(local)?;
    socket.set_nonblocking(true)?;
    // Connected: datagrams from elsewhere never arrive, and ICMP unreachable ends the wait.
    socket.connect(upstream)?;
    socket.send(message)?;
    let mut buf = vec![0u8; message::TCP_LIMIT];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => {
                if let Some(relayed) = relayable(&buf[..n], id_of(message), query) {
                    return Ok(relayed);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match wait::wait(&socket, PollFlags::IN, Some(deadline), stop)? {
                    Waited::Ready => {}
                    Waited::TimedOut => return Err(ExchangeError::TimedOut),
                    Waited::Stopped => return Err(ExchangeError::Stopped),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends `message` (`query` with another ID) to `upstream` over a new TCP connection and
/// reads one message back, all by `deadline`; it must answer the query.
fn exchange_tcp(
    upstream: SocketAddr,
    message: &[u8],
    query: &Query,
    deadline: Instant,
    stop: &Stop,
) -> Result<Vec<u8>, ExchangeError> {
    let stream = connect(upstream, deadline, stop)?;
    wait::write_frame(&stream, message, deadline, stop)?;
    let whole = deadline.saturating_duration_since(Instant::now());
    let reply = wait::read_frame(&stream, deadline, whole, stop)?
        .ok_or(ExchangeError::Frame(FrameError::Closed))?;
    relayable(&reply, id_of(message), query).ok_or(ExchangeError::Mismatch)
}

/// A non-blocking TCP connection to `upstream`, established by `deadline`.
fn connect(
    upstream: SocketAddr,
    deadline: Instant,
    stop: &Stop,
) -> Result<TcpStream, ExchangeError> {
    let family = match upstream {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    match rustix::net::connect(&fd, &upstream) {
        Ok(()) => {}
        // Interrupted, the connection still goes on in the background, as when in progress.
        Err(rustix::io::Errno::INPROGRESS | rustix::io::Errno::INTR) => {
            match wait::wait(&fd, PollFlags::OUT, Some(deadline), stop)? {
                Waited::Ready => {}
                Waited::TimedOut => return Err(ExchangeError::TimedOut),
                Waited::Stopped => return Err(ExchangeError::Stopped),
            }
            rustix::net::sockopt::socket_error(&fd)
                .map_err(io::Error::from)?
                .map_err(io::Error::from)?;
        }
        Err(e) => return Err(io::Error::from(e).into()),
    }
    Ok(TcpStream::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::message::{build_query, parse_query, TYPE_A};

    #[test]
    fn resolv_conf_nameservers() {
        let text = "\
# generated
search example.com
nameserver 192.0.2.53
nameserver   2001:db8::53  # trailing comment
;nameserver 192.0.2.1
nameserver fe80::1%2
nameserver fe80::1%eth0
nameserver not-an-address
nameserver
options ndots:2
nameserver 192.0.2.54
";
        let got = upstreams_from_resolv_conf(text);
        assert_eq!(
            got,
            [
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap(),
                SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, 2)),
            ]
        );
        assert_eq!(upstreams_from_resolv_conf(""), []);
    }

    #[test]
    fn only_matching_answers_are_relayed() {
        let bytes = build_query(0x1111, "example.com", TYPE_A);
        let query = parse_query(&bytes).unwrap();
        let mut reply = message::answer(&query, &[Ipv4Addr::new(192, 0, 2, 1)], 30, 512);
        reply[..2].copy_from_slice(&0x2222u16.to_be_bytes());
        let relayed = relayable(&reply, 0x2222, &query).expect("a matching answer");
        assert_eq!(relayed[..2], 0x1111u16.to_be_bytes());
        assert_eq!(relayed[2..], reply[2..]);
        // Another ID, another question, a query instead of an answer, junk.
        assert_eq!(relayable(&reply, 0x2223, &query), None);
        let other = parse_query(&build_query(0x1111, "example.org", TYPE_A)).unwrap();
        assert_eq!(relayable(&reply, 0x2222, &other), None);
        assert_eq!(relayable(&bytes, 0x1111, &query), None);
        assert_eq!(relayable(&reply[..20], 0x2222, &query), None);
        // An error without a question is relayed; a success without one is not.
        let header = message::Header::parse(&reply).unwrap();
        let formerr = message::header_error(&header, message::Rcode::FormErr);
        assert!(relayable(&formerr, 0x2222, &query).is_some());
        let mut empty = formerr.clone();
        empty[3] &= 0xf0;
        assert_eq!(relayable(&empty, 0x2222, &query), None);
    }

    #[test]
    fn no_upstreams_is_no_answer() {
        let bytes = build_query(1, "example.com", TYPE_A);
        let query = parse_query(&bytes).unwrap();
        let stop = Stop::new().unwrap();
        for transport in [Transport::Udp, Transport::Tcp] {
            assert_eq!(
                forward(&bytes, &query, &[], transport, &stop),
                Err(ForwardError::NoAnswer)
            );
        }
    }
}

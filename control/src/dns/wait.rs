//! Bounded, stoppable waits on non-blocking sockets, and DNS-over-TCP framing on top of them.
//!
//! Every wait of the resolver's threads goes through [`wait`]: a `poll` on the socket and on
//! the resolver's [`Stop`] eventfd together, with a deadline. So dropping the resolver wakes
//! every thread at once, wherever it waits, and nothing waits on a peer without a bound.
//! TCP messages carry a two-byte length prefix (RFC 1035 section 4.2.2, RFC 7766).

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The resolver's stop signal: a flag, and an eventfd that stays readable once signalled so
/// that every `poll` including it returns.
#[derive(Debug)]
pub(crate) struct Stop {
    flag: AtomicBool,
    fd: OwnedFd,
}

impl Stop {
    pub(crate) fn new() -> io::Result<Stop> {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Stop {
            flag: AtomicBool::new(false),
            fd,
        })
    }

    /// Tells every thread to stop.
    pub(crate) fn signal(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // Never read, so one write keeps the eventfd readable for good; it cannot overflow.
        if let Err(e) = rustix::io::write(&self.fd, &1u64.to_ne_bytes()) {
            tracing::warn!(error = %e, "signalling the DNS resolver's threads to stop");
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Sleeps for `duration` or until stopped; whether stopped.
    pub(crate) fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        loop {
            if self.is_set() {
                return true;
            }
            let Some(timeout) = timeout_until(Some(deadline)) else {
                return false;
            };
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "waiting on the DNS resolver's stop signal");
                    return self.is_set();
                }
            }
        }
    }
}

/// How a wait ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The socket is ready (or has an error to report).
    Ready,
    /// The deadline passed.
    TimedOut,
    /// The resolver is stopping.
    Stopped,
}

/// What is left until `deadline` as a poll timeout: `Some(None)` waits forever, `None`
/// means the deadline has passed.
fn timeout_until(deadline: Option<Instant>) -> Option<Option<Timespec>> {
    let Some(deadline) = deadline else {
        return Some(None);
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return None;
    }
    // A duration too long for a Timespec is as good as forever.
    Some(Timespec::try_from(left).ok())
}

/// Waits until `fd` is ready for `events`, `deadline` passes, or `stop` is signalled.
pub(crate) fn wait(
    fd: impl AsFd,
    events: PollFlags,
    deadline: Option<Instant>,
    stop: &Stop,
) -> io::Result<Waited> {
    loop {
        if stop.is_set() {
            return Ok(Waited::Stopped);
        }
        let Some(timeout) = timeout_until(deadline) else {
            return Ok(Waited::TimedOut);
        };
        let mut fds = [
            PollFd::new(&fd, events),
            PollFd::new(&stop.fd, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) if !fds[1].revents().is_empty() => return Ok(Waited::Stopped),
            Ok(_) if !fds[0].revents().is_empty() => return Ok(Waited::Ready),
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Why a framed read or write over TCP ended without a message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The peer closed the connection inside a message.
    #[error("connection closed inside a message")]
    Closed,
    /// The deadline passed.
    #[error("timed out")]
    TimedOut,
    /// The resolver is stopping.
    #[error("stopping")]
    Stopped,
    /// A message too long for the two-byte length prefix.
    #[error("a message of {0} bytes does not fit a TCP frame")]
    TooLong(usize),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Fills `buf` from the non-blocking `stream` by `deadline`. `Ok(false)`: the peer closed
/// the connection before the first byte.
fn fill(
    stream: &TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    stop: &Stop,
) -> Result<bool, FrameError> {
    let mut done = 0;
    while done < buf.len() {
        match (&*stream).read(&mut buf[done..]) {
            Ok(0) if done == 0 => return Ok(false),
            Ok(0) => return Err(FrameError::Closed),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match wait(stream, PollFlags::IN, Some(deadline), stop)? {
                    Waited::Ready => {}
                    Waited::TimedOut => return Err(FrameError::TimedOut),
                    Waited::Stopped => return Err(FrameError::Stopped),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Reads one length-prefixed message from the non-blocking `stream`: its first byte must
/// come by `first_byte`, the rest within `whole` of that. `Ok(None)`: the peer closed the
/// connection between messages.
pub(crate) fn read_frame(
    stream: &TcpStream,
    first_byte: Instant,
    whole: Duration,
    stop: &Stop,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut first = [0u8; 1];
    if !fill(stream, &mut first, first_byte, stop)? {
        return Ok(None);
    }
    let deadline = Instant::now() + whole;
    let mut second = [0u8; 1];
    if !fill(stream, &mut second, deadline, stop)? {
        return Err(FrameError::Closed);
    }
    let mut message = vec![0u8; usize::from(u16::from_be_bytes([first[0], second[0]]))];
    if !message.is_empty() && !fill(stream, &mut message, deadline, stop)? {
        return Err(FrameError::Closed);
    }
    Ok(Some(message))
}

/// Writes `message` with its length prefix to the non-blocking `stream` by `deadline`.
pub(crate) fn write_frame(
    stream: &TcpStream,
    message: &[u8],
    deadline: Instant,
    stop: &Stop,
) -> Result<(), FrameError> {
    let len = u16::try_from(message.len()).map_err(|_| FrameError::TooLong(message.len()))?;
    let mut framed = Vec::with_capacity(2 + message.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    let mut done = 0;
    while done < framed.len() {
        match (&*stream).write(&framed[done..]) {
            Ok(0) => return Err(FrameError::Closed),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match wait(stream, PollFlags::OUT, Some(deadline), stop)? {
                    Waited::Ready => {}
                    Waited::TimedOut => return Err(FrameError::TimedOut),
                    Waited::Stopped => return Err(FrameError::Stopped),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, server)
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    #[test]
    fn frames_round_trip_in_pieces() {
        let stop = Stop::new().unwrap();
        let (mut client, server) = pair();
        let writer = std::thread::spawn(move || {
            for piece in [&[0u8][..], &[3, b'a'], &[b'b', b'c', 0, 0]] {
                client.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            client
        });
        let got = read_frame(&server, far(), Duration::from_secs(30), &stop).unwrap();
        assert_eq!(got.as_deref(), Some(&b"abc"[..]));
        // An empty message is a message.
        assert_eq!(
            read_frame(&server, far(), Duration::from_secs(30), &stop).unwrap(),
            Some(vec![])
        );
        let client = writer.join().unwrap();
        drop(client);
        assert_eq!(
            read_frame(&server, far(), Duration::from_secs(30), &stop).unwrap(),
            None
        );
    }

    #[test]
    fn a_peer_that_stops_mid_message_times_out_or_closes() {
        let stop = Stop::new().unwrap();
        let (mut client, server) = pair();
        client.write_all(&[0, 10, 1, 2]).unwrap();
        let soon = Instant::now() + Duration::from_millis(100);
        assert!(matches!(
            read_frame(&server, soon, Duration::from_millis(100), &stop),
            Err(FrameError::TimedOut)
        ));
        drop(client);
        let (mut client, server) = pair();
        client.write_all(&[0, 10, 1]).unwrap();
        drop(client);
        assert!(matches!(
            read_frame(&server, far(), Duration::from_secs(30), &stop),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn stop_wakes_a_waiting_reader() {
        let stop = std::sync::Arc::new(Stop::new().unwrap());
        let (_client, server) = pair();
        let signaller = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                stop.signal();
            })
        };
        assert!(matches!(
            read_frame(&server, far(), Duration::from_secs(30), &stop),
            Err(FrameError::Stopped)
        ));
        signaller.join().unwrap();
        assert!(stop.sleep(Duration::from_secs(30)));
        assert_eq!(
            wait(&server, PollFlags::IN, None, &stop).unwrap(),
            Waited::Stopped
        );
    }

    #[test]
    fn writes_refuse_what_cannot_be_framed() {
        let stop = Stop::new().unwrap();
        let (mut client, server) = pair();
        assert!(matches!(
            write_frame(&server, &vec![0; 65_536], far(), &stop),
            Err(FrameError::TooLong(65_536))
        ));
        write_frame(&server, b"xy", far(), &stop).unwrap();
        let mut got = [0u8; 4];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, [0, 2, b'x', b'y']);
    }
}

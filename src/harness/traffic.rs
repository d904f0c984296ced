//! Traffic between containers: `ping` (iputils), a TCP bulk transfer done in Rust whose two
//! ends are compared by SHA-256 ([`tcp_transfer`]; [`tcp_transfer_with`] also chooses the
//! MSS and the write size), and a flow-controlled UDP flow of numbered, self-checking
//! datagrams ([`udp_flow`]).
//!
//! The transfer opens the listening socket inside one container namespace and the connected
//! socket inside the other with `run_in`; the sockets stay in their namespaces while the
//! test's threads drive them. Every read and write has a timeout and the whole transfer a
//! deadline, so a broken overlay fails the test instead of hanging it.

use super::netns::{Netns, NetnsExt};
use sha2::{Digest, Sha256};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// What `ping` reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingResult {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Echo replies received.
    pub received: u32,
    /// The full output, for messages.
    pub output: String,
}

/// `ping -c COUNT -i 0.2 -W 1 [-s SIZE] TO` inside `from`. Never panics on loss: read
/// `received`.
///
/// # Panics
///
/// If ping cannot run or prints no statistics line.
pub fn ping(from: &Netns, to: Ipv4Addr, count: u32, size: Option<usize>) -> PingResult {
    let mut args = vec![
        "ping".to_owned(),
        "-n".to_owned(),
        "-c".to_owned(),
        count.to_string(),
        "-i".to_owned(),
        "0.2".to_owned(),
        "-W".to_owned(),
        "1".to_owned(),
    ];
    if let Some(size) = size {
        args.extend(["-s".to_owned(), size.to_string()]);
    }
    args.push(to.to_string());
    let out = from.try_exec(&args);
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = output
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("ping {to} from {}: no statistics:\n{output}", from.name()));
    let number_before = |word: &str| -> u32 {
        stats
            .split(',')
            .find(|part| part.contains(word))
            .and_then(|part| part.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    PingResult {
        transmitted: number_before("transmitted"),
        received: number_before("received"),
        output,
    }
}

/// Pings and asserts that every echo request was answered.
///
/// # Panics
///
/// If any reply is missing; the message holds ping's output.
pub fn assert_ping(from: &Netns, to: Ipv4Addr, count: u32, size: Option<usize>) {
    let result = ping(from, to, count, size);
    assert!(
        result.transmitted == count && result.received == count,
        "ping {to} (size {size:?}) from {}: {} of {count} answered:\n{}",
        from.name(),
        result.received,
        result.output
    );
}

/// Pings and asserts that no echo request was answered.
pub fn assert_no_ping(from: &Netns, to: Ipv4Addr, count: u32) {
    let result = ping(from, to, count, None);
    assert_eq!(
        result.received,
        0,
        "ping {to} from {} should fail but got replies:\n{}",
        from.name(),
        result.output
    );
}

/// Both ends of a TCP transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Bytes written by the sender.
    pub sent: u64,
    /// Bytes read by the receiver before end of stream.
    pub received: u64,
    /// SHA-256 of what was sent, in hex.
    pub sent_digest: String,
    /// SHA-256 of what was received, in hex.
    pub received_digest: String,
}

impl Transfer {
    /// Whether everything arrived, byte for byte.
    pub fn intact(&self) -> bool {
        self.sent == self.received && self.sent_digest == self.received_digest
    }
}

/// Longest a single read or write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const CHUNK: usize = 64 * 1024;

/// Deterministic pseudo-random bytes (xorshift64*), so a failed transfer can be replayed.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            let word = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends `len` bytes of deterministic pseudo-random data over TCP from container namespace
/// `from` to `to_ip`:an ephemeral port in `to`, and returns what each end saw.
///
/// # Errors
///
/// A description of what failed (connect, a read or write timing out, the deadline) when
/// the transfer did not complete within `limit` (plus at most one I/O timeout).
pub fn tcp_transfer(
    from: &Netns,
    to: &Netns,
    to_ip: Ipv4Addr,
    len: u64,
    limit: Duration,
) -> Result<Transfer, String> {
    let deadline = Instant::now() + limit;
    let route = format!("{} -> {} ({to_ip})", from.name(), to.name());
    let listener = to
        .run_in(|| TcpListener::bind((to_ip, 0)))
        .map_err(|e| format!("{route}: listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("{route}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{route}: {e}"))?;
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| receive(&listener, deadline));
        let sent = send(from, addr, len, deadline, &route);
        let received = receiver
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let (sent, sent_digest) = sent?;
        let (received, received_digest) = received.map_err(|e| format!("{route}: {e}"))?;
        Ok(Transfer {
            sent,
            received,
            sent_digest,
            received_digest,
        })
    })
}

fn send(
    from: &Netns,
    addr: SocketAddr,
    len: u64,
    deadline: Instant,
    route: &str,
) -> Result<(u64, String), String> {
    let connect_timeout = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let stream = from
        .run_in(|| TcpStream::connect_timeout(&addr, connect_timeout))
        .map_err(|e| format!("{route}: connect: {e}"))?;
    send_on(stream, len, CHUNK, deadline, route)
}

/// Writes `len` pattern bytes on `stream` in writes of at most `chunk` bytes, then shuts
/// down the write side; returns the count and the SHA-256 of what was written.
fn send_on(
    mut stream: TcpStream,
    len: u64,
    chunk: usize,
    deadline: Instant,
    route: &str,
) -> Result<(u64, String), String> {
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| format!("{route}: {e}"))?;
    let mut pattern = Pattern(0x9e37_79b9_7f4a_7c15 ^ len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; chunk];
    let mut sent = 0u64;
    while sent < len {
        if Instant::now() > deadline {
            return Err(format!(
                "{route}: deadline passed after sending {sent} bytes"
            ));
        }
        let n = usize::try_from((len - sent).min(chunk as u64)).expect("chunk fits usize");
        pattern.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        stream
            .write_all(&buf[..n])
            .map_err(|e| format!("{route}: write after {sent} bytes: {e}"))?;
        sent += n as u64;
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("{route}: shutdown: {e}"))?;
    Ok((sent, hex(&hasher.finalize())))
}

fn receive(listener: &TcpListener, deadline: Instant) -> Result<(u64, String), String> {
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err("no connection before the deadline".to_owned());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 * CHUNK];
    let mut received = 0u64;
    loop {
        if Instant::now() > deadline {
            return Err(format!("deadline passed after receiving {received} bytes"));
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                received += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read after {received} bytes: {e}")),
        }
    }
    Ok((received, hex(&hasher.finalize())))
}

/// Transfers `len` bytes and asserts they arrived intact.
///
/// # Panics
///
/// If the transfer fails or the digests differ.
pub fn assert_tcp_transfer(from: &Netns, to: &Netns, to_ip: Ipv4Addr, len: u64, limit: Duration) {
    let transfer = tcp_transfer(from, to, to_ip, len, limit)
        .unwrap_or_else(|e| panic!("TCP transfer failed: {e}"));
    assert!(
        transfer.intact(),
        "TCP transfer {} -> {to_ip} corrupted: {transfer:?}",
        from.name()
    );
    assert_eq!(transfer.sent, len);
}

/// How [`tcp_transfer_with`] shapes its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOptions {
    /// `TCP_MAXSEG` on the listening socket (before `listen`, so its SYN-ACK advertises it)
    /// and on the connecting socket (before `connect`, so its SYN advertises it and it
    /// clamps its own sends): both ends then send full segments of this MSS less the TCP
    /// options in use (12 bytes of timestamps, usually). `None` keeps the route's MSS.
    pub mss: Option<u32>,
    /// Largest single `write` of the sender. When it is at least the transfer's length, the
    /// whole transfer is one write, followed at once by the shutdown (the FIN).
    pub write_size: usize,
}

impl Default for TcpOptions {
    /// The route's MSS, 64 KiB writes: what [`tcp_transfer`] does.
    fn default() -> TcpOptions {
        TcpOptions {
            mss: None,
            write_size: CHUNK,
        }
    }
}

/// A [`Transfer`] done by [`tcp_transfer_with`], with what the sender knew of its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSession {
    /// Both ends' counts and digests.
    pub transfer: Transfer,
    /// The sender's MSS once connected (`TCP_MAXSEG` read back: payload bytes of a full
    /// segment, TCP options already taken off).
    pub sender_mss: u32,
    /// The sender's address and port.
    pub sender: SocketAddr,
    /// The receiver's (listening) address and port.
    pub receiver: SocketAddr,
}

/// [`tcp_transfer`] with a chosen MSS and write size (see [`TcpOptions`]); also reports the
/// sender's MSS and both ends' ports, so captures can pick the connection out.
///
/// # Errors
///
/// As [`tcp_transfer`]; also when `TCP_MAXSEG` is refused.
pub fn tcp_transfer_with(
    from: &Netns,
    to: &Netns,
    to_ip: Ipv4Addr,
    len: u64,
    limit: Duration,
    options: &TcpOptions,
) -> Result<TcpSession, String> {
    let deadline = Instant::now() + limit;
    let route = format!("{} -> {} ({to_ip})", from.name(), to.name());
    let listener = to
        .run_in(|| -> io::Result<TcpListener> {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            if let Some(mss) = options.mss {
                socket.set_tcp_mss(mss)?;
            }
            socket.bind(&SocketAddr::from((to_ip, 0)).into())?;
            socket.listen(16)?;
            Ok(socket.into())
        })
        .map_err(|e| format!("{route}: listen: {e}"))?;
    let receiver = listener.local_addr().map_err(|e| format!("{route}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{route}: {e}"))?;
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| receive(&listener, deadline));
        let sent = connect_with(from, receiver, options.mss, deadline, &route).and_then(
            |(stream, sender_mss, sender)| {
                let (sent, digest) =
                    send_on(stream, len, options.write_size.max(1), deadline, &route)?;
                Ok((sent, digest, sender_mss, sender))
            },
        );
        let received = reader
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let (sent, sent_digest, sender_mss, sender) = sent?;
        let (received, received_digest) = received.map_err(|e| format!("{route}: {e}"))?;
        Ok(TcpSession {
            transfer: Transfer {
                sent,
                received,
                sent_digest,
                received_digest,
            },
            sender_mss,
            sender,
            receiver,
        })
    })
}

/// Connects from inside `from` to `addr` with `TCP_MAXSEG` set first when `mss` is given;
/// returns the stream, its MSS once connected and its local address.
fn connect_with(
    from: &Netns,
    addr: SocketAddr,
    mss: Option<u32>,
    deadline: Instant,
    route: &str,
) -> Result<(TcpStream, u32, SocketAddr), String> {
    let timeout = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let socket = from
        .run_in(|| -> io::Result<Socket> {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            if let Some(mss) = mss {
                socket.set_tcp_mss(mss)?;
            }
            socket.connect_timeout(&addr.into(), timeout)?;
            Ok(socket)
        })
        .map_err(|e| format!("{route}: connect: {e}"))?;
    let sender_mss = socket
        .tcp_mss()
        .map_err(|e| format!("{route}: TCP_MAXSEG: {e}"))?;
    let stream: TcpStream = socket.into();
    let local = stream.local_addr().map_err(|e| format!("{route}: {e}"))?;
    Ok((stream, sender_mss, local))
}

/// A one-way UDP flow for [`udp_flow`]: `count` numbered datagrams whose payload sizes mix
/// the smallest (8 bytes), the largest (`max_payload`) and pseudo-random sizes between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFlow {
    /// Datagrams to send.
    pub count: u32,
    /// Largest UDP payload: 1422 fills a 1450-byte MTU (1450 - 20 - 8).
    pub max_payload: usize,
    /// Most datagrams in flight (sent, neither received nor written off as lost): flow
    /// control, so that the flow measures loss in the overlay rather than in the queues a
    /// blast would overrun. No rate is asserted anywhere.
    pub window: u32,
}

/// What [`udp_flow`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpReport {
    /// Datagrams the sender's kernel accepted.
    pub sent: u32,
    /// Sends the kernel refused (ENOBUFS, say); those datagrams were not sent.
    pub send_errors: u32,
    /// Distinct datagrams that arrived with exactly the bytes sent.
    pub intact: u32,
    /// Datagrams that arrived with a wrong length or wrong bytes (the first few are
    /// described in `damage`).
    pub corrupt: u32,
    /// Datagrams that arrived more than once (the copies).
    pub duplicates: u32,
    /// Descriptions of the first corrupt datagrams.
    pub damage: Vec<String>,
}

/// The 4-byte tag and 4-byte sequence number that open every datagram of [`udp_flow`].
const UDP_MIN_PAYLOAD: usize = 8;
/// Without progress at the receiver for this long, the datagrams in flight are written off
/// as lost and the sender goes on.
const UDP_STALL: Duration = Duration::from_millis(200);
/// How long the receiver waits for stragglers once the sender is done.
const UDP_QUIET: Duration = Duration::from_millis(500);

/// The payload length of datagram `seq` of a flow with payloads up to `max`.
fn udp_payload_len(seq: u32, max: usize) -> usize {
    let max = max.max(UDP_MIN_PAYLOAD);
    match seq % 4 {
        0 => max,
        1 => UDP_MIN_PAYLOAD,
        _ => {
            let mut r = [0u8; 8];
            Pattern(u64::from(seq).wrapping_mul(0x9e37_79b9) | 1).fill(&mut r);
            let span = (max - UDP_MIN_PAYLOAD + 1) as u64;
            UDP_MIN_PAYLOAD + (u64::from_le_bytes(r) % span) as usize
        }
    }
}

/// Writes datagram `seq` of flow `tag` into `buf` and returns its length.
fn udp_payload(tag: u32, seq: u32, max: usize, buf: &mut [u8]) -> usize {
    let len = udp_payload_len(seq, max);
    buf[..4].copy_from_slice(&tag.to_be_bytes());
    buf[4..8].copy_from_slice(&seq.to_be_bytes());
    Pattern((u64::from(tag) << 32 | u64::from(seq)) ^ 0x5851_f42d_4c95_7f2d)
        .fill(&mut buf[UDP_MIN_PAYLOAD..len]);
    len
}

/// Sends `flow` over UDP from container namespace `from` to an ephemeral port on `to_ip` in
/// `to`, and checks every datagram that arrives against what was sent (length and bytes).
/// Loss is reported, not an error: read [`UdpReport::intact`]. The receiver stops when
/// everything arrived or [`UDP_QUIET`] after the sender finished.
///
/// # Errors
///
/// When a socket cannot be set up, or the deadline (`limit`) passes before every datagram
/// was sent.
pub fn udp_flow(
    from: &Netns,
    to: &Netns,
    to_ip: Ipv4Addr,
    flow: &UdpFlow,
    limit: Duration,
) -> Result<UdpReport, String> {
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

    let deadline = Instant::now() + limit;
    let route = format!("UDP {} -> {} ({to_ip})", from.name(), to.name());
    let max = flow.max_payload.max(UDP_MIN_PAYLOAD);
    let receiver = to
        .run_in(|| -> io::Result<UdpSocket> {
            let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            socket.set_recv_buffer_size(4 << 20)?;
            socket.bind(&SocketAddr::from((to_ip, 0)).into())?;
            Ok(socket.into())
        })
        .map_err(|e| format!("{route}: bind: {e}"))?;
    let addr = receiver.local_addr().map_err(|e| format!("{route}: {e}"))?;
    receiver
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| format!("{route}: {e}"))?;
    let sender = from
        .run_in(|| -> io::Result<UdpSocket> {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            socket.connect(addr)?;
            Ok(socket)
        })
        .map_err(|e| format!("{route}: connect: {e}"))?;
    // The flow's tag: its port pair, so that two flows never accept each other's datagrams.
    let tag = u32::from(addr.port()) << 16
        | u32::from(sender.local_addr().map_err(|e| e.to_string())?.port());
    let arrived = AtomicU32::new(0);
    let done = AtomicBool::new(false);

    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut report = UdpReport::default();
            let mut seen = vec![false; flow.count as usize];
            let mut buf = vec![0u8; 65_536];
            let mut expected = vec![0u8; max];
            let mut quiet_since: Option<Instant> = None;
            while report.intact < flow.count && Instant::now() < deadline {
                let n = match receiver.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        if done.load(Relaxed) {
                            let since = *quiet_since.get_or_insert_with(Instant::now);
                            if since.elapsed() >= UDP_QUIET {
                                break;
                            }
                        }
                        continue;
                    }
                    Err(e) => return Err(format!("{route}: receive: {e}")),
                };
                quiet_since = None;
                arrived.fetch_add(1, Relaxed);
                let got = &buf[..n];
                let seq = (n >= UDP_MIN_PAYLOAD)
                    .then(|| u32::from_be_bytes([got[4], got[5], got[6], got[7]]))
                    .filter(|&seq| seq < flow.count && got[..4] == tag.to_be_bytes());
                let Some(seq) = seq else {
                    report.corrupt += 1;
                    if report.damage.len() < 8 {
                        report
                            .damage
                            .push(format!("{n} bytes, no header of this flow"));
                    }
                    continue;
                };
                let len = udp_payload(tag, seq, max, &mut expected);
                if got != &expected[..len] {
                    report.corrupt += 1;
                    if report.damage.len() < 8 {
                        let first = got.iter().zip(&expected[..len]).position(|(a, b)| a != b);
                        report.damage.push(format!(
                            "datagram {seq}: {n} bytes (sent {len}), first wrong byte {first:?}"
                        ));
                    }
                } else if std::mem::replace(&mut seen[seq as usize], true) {
                    report.duplicates += 1;
                } else {
                    report.intact += 1;
                }
            }
            Ok(report)
        });

        let mut sent = 0u32;
        let mut send_errors = 0u32;
        let mut written_off = 0u32;
        let mut buf = vec![0u8; max];
        let mut result = Ok(());
        let (mut last_arrived, mut last_progress) = (0u32, Instant::now());
        for seq in 0..flow.count {
            loop {
                let now = Instant::now();
                if now > deadline {
                    result = Err(format!(
                        "{route}: deadline passed after sending {sent} of {} datagrams",
                        flow.count
                    ));
                    break;
                }
                let got = arrived.load(Relaxed);
                if got != last_arrived {
                    (last_arrived, last_progress) = (got, now);
                }
                let in_flight = sent.saturating_sub(got).saturating_sub(written_off);
                if in_flight < flow.window.max(1) {
                    break;
                }
                if now.duration_since(last_progress) >= UDP_STALL {
                    written_off += in_flight;
                    last_progress = now;
                    continue;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            if result.is_err() {
                break;
            }
            let len = udp_payload(tag, seq, max, &mut buf);
            match sender.send(&buf[..len]) {
                Ok(_) => sent += 1,
                Err(_) => send_errors += 1,
            }
        }
        done.store(true, Relaxed);
        let report = reader
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        result?;
        let mut report = report?;
        report.sent = sent;
        report.send_errors = send_errors;
        Ok(report)
    })
}

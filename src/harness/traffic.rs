//! Traffic between containers: `ping` (iputils), and a TCP bulk transfer done in Rust whose
//! two ends are compared by SHA-256.
//!
//! The transfer opens the listening socket inside one container namespace and the connected
//! socket inside the other with `run_in`; the sockets stay in their namespaces while the
//! test's threads drive them. Every read and write has a timeout and the whole transfer a
//! deadline, so a broken overlay fails the test instead of hanging it.

use super::netns::Netns;
use sha2::{Digest, Sha256};
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
    let mut stream = from
        .run_in(|| TcpStream::connect_timeout(&addr, connect_timeout))
        .map_err(|e| format!("{route}: connect: {e}"))?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| format!("{route}: {e}"))?;
    let mut pattern = Pattern(0x9e37_79b9_7f4a_7c15 ^ len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    while sent < len {
        if Instant::now() > deadline {
            return Err(format!(
                "{route}: deadline passed after sending {sent} bytes"
            ));
        }
        let n = usize::try_from((len - sent).min(CHUNK as u64)).expect("chunk fits usize");
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

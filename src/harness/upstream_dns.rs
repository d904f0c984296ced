//! [`UpstreamDns`]: a tiny DNS server standing in for a host's real resolvers, so the
//! overlay resolvers' forwarding is tested without sending anything outside the test's
//! namespaces. It answers one name with one IPv4 address and everything else with
//! NXDOMAIN, and counts the queries it saw.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The name every [`UpstreamDns`] owns.
pub const UPSTREAM_NAME: &str = "outside.test";
/// Its address.
pub const UPSTREAM_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// A UDP DNS server on a thread, bound inside a test namespace; stops when dropped.
pub struct UpstreamDns {
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UpstreamDns {
    /// Serves at `addr` inside the network namespace at `netns`.
    ///
    /// # Panics
    ///
    /// If the namespace cannot be entered or the address bound.
    pub fn start(netns: &Path, addr: SocketAddrV4) -> UpstreamDns {
        let socket = vxtap_dataplane::io::netns::run_in(netns, || UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("entering {}: {e}", netns.display()))
            .unwrap_or_else(|e| panic!("binding the upstream DNS at {addr}: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("a read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, queries) = (Arc::clone(&stop), Arc::clone(&queries));
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    queries.fetch_add(1, Ordering::SeqCst);
                    if let Some(reply) = answer(&buf[..n]) {
                        let _ = socket.send_to(&reply, from);
                    }
                }
            })
        };
        UpstreamDns {
            addr,
            stop,
            queries,
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// Queries received so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for UpstreamDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The answer to `query`: [`UPSTREAM_ADDRESS`] for an A query of [`UPSTREAM_NAME`], NXDOMAIN
/// for any other question; `None` for what is not a one-question query.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] {
        return None;
    }
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_lowercase());
        at += len;
    }
    let qtype = query.get(at..at + 2)?;
    let question_end = at + 4;
    query.get(at..question_end)?;
    let ours = labels.join(".") == UPSTREAM_NAME && qtype == [0, 1];
    let mut reply = Vec::with_capacity(question_end + 16);
    reply.extend_from_slice(&query[..2]);
    // QR, the query's RD, RA; NOERROR or NXDOMAIN.
    reply.push(0x80 | (query[2] & 0x01));
    reply.push(if ours { 0x80 } else { 0x83 });
    reply.extend_from_slice(&[0, 1, 0, u8::from(ours), 0, 0, 0, 0]);
    reply.extend_from_slice(&query[12..question_end]);
    if ours {
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&UPSTREAM_ADDRESS.octets());
    }
    Some(reply)
}

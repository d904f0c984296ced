//! `vxtap bench-flood DST:PORT RATE SECONDS [SOCKETS]` (hidden): the "unknown host" of the
//! benchmark's flood test. Sends RATE datagrams a second for SECONDS at DST:PORT,
//! alternating between garbage (8 to 100 random bytes, so mostly not VXLAN or with the I
//! flag clear) and well-formed VXLAN for VNI 42 carrying a 64-byte inner frame, which only an
//! unknown VTEP sends. They leave from SOCKETS sockets (default 16) with distinct source
//! ports, so the receiver spreads them over its sockets as a real host's flows would be.
//! Paced in bursts of 32; prints what it sent and the rate it reached (a busy machine may
//! reach less).
//!
//! `vxtap bench` runs it inside the unknown host's namespace (`ip netns exec NS vxtap
//! bench-flood ...`); it only ever sends to the address it is given.

use super::BenchError;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const BURST: u64 = 32;

/// The hidden subcommand's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct FloodArgs {
    /// Where to send (host B's underlay address and VXLAN port).
    pub dst: SocketAddr,
    /// Datagrams a second.
    pub rate: u64,
    /// How long, in seconds.
    pub seconds: f64,
    /// Sockets (distinct source ports).
    #[arg(default_value_t = 16)]
    pub sockets: usize,
}

/// What a flood did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodOutcome {
    /// Datagrams sent.
    pub sent: u64,
    /// Sends refused (full queue, ICMP errors of earlier datagrams).
    pub refused: u64,
    /// Seconds it ran.
    pub seconds: f64,
}

impl FloodOutcome {
    /// Datagrams a second actually sent.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.sent as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The line `vxtap bench-flood` prints, which [`parse_rate`] reads back.
    pub fn line(&self) -> String {
        format!(
            "sent {} datagrams ({} refused) in {:.2} s: {:.0}/s",
            self.sent,
            self.refused,
            self.seconds,
            self.rate()
        )
    }
}

/// The rate out of a [`FloodOutcome::line`].
pub fn parse_rate(line: &str) -> Option<f64> {
    line.trim()
        .rsplit(": ")
        .next()?
        .strip_suffix("/s")?
        .parse()
        .ok()
}

/// xorshift64*: enough randomness for garbage, no dependency.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn datagram(prng: &mut Prng, n: u64, buf: &mut Vec<u8>) {
    buf.clear();
    if n % 2 == 0 {
        let len = 8 + (prng.next() % 93) as usize;
        buf.extend((0..len).map(|_| prng.next() as u8));
    } else {
        // I flag, VNI 42; inner: broadcast from a random unicast MAC, IPv4 EtherType.
        buf.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 42, 0]);
        buf.extend_from_slice(&[0xff; 6]);
        let src = prng.next().to_be_bytes();
        buf.extend_from_slice(&[0x02, src[1], src[2], src[3], src[4], src[5]]);
        buf.extend_from_slice(&[0x08, 0x00]);
        buf.resize(8 + 64, 0);
    }
}

/// Floods as `args` says.
///
/// # Errors
///
/// `BadArgument` for a zero rate, socket count or duration; `Flood` if the sockets cannot
/// be made.
pub fn run(args: &FloodArgs) -> Result<FloodOutcome, BenchError> {
    let bad = |flag: &str, why: &str| BenchError::BadArgument {
        flag: flag.to_owned(),
        why: why.to_owned(),
    };
    if args.rate == 0 {
        return Err(bad("RATE", "must be at least 1"));
    }
    if args.sockets == 0 {
        return Err(bad("SOCKETS", "must be at least 1"));
    }
    if !args.seconds.is_finite() || args.seconds <= 0.0 {
        return Err(bad("SECONDS", "must be a positive number"));
    }
    let sockets: Vec<UdpSocket> = (0..args.sockets)
        .map(|_| UdpSocket::bind(("0.0.0.0", 0)))
        .collect::<Result<_, _>>()
        .map_err(BenchError::Flood)?;
    let mut prng = Prng(0x9e37_79b9_7f4a_7c15);
    let mut buf = Vec::with_capacity(128);
    let (start, length) = (Instant::now(), Duration::from_secs_f64(args.seconds));
    let (mut sent, mut refused) = (0u64, 0u64);
    while start.elapsed() < length {
        for _ in 0..BURST {
            datagram(&mut prng, sent + refused, &mut buf);
            let socket = &sockets[((sent + refused) % sockets.len() as u64) as usize];
            match socket.send_to(&buf, args.dst) {
                Ok(_) => sent += 1,
                // A full queue or an ICMP error from an earlier datagram: count and go on.
                Err(_) => refused += 1,
            }
        }
        let due = Duration::from_secs_f64((sent + refused) as f64 / args.rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    Ok(FloodOutcome {
        sent,
        refused,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_alternate_garbage_and_unknown_vteps() {
        let mut prng = Prng(1);
        let mut buf = Vec::new();
        datagram(&mut prng, 0, &mut buf);
        assert!((8..=100).contains(&buf.len()));
        datagram(&mut prng, 1, &mut buf);
        assert_eq!(buf.len(), 72);
        assert_eq!(&buf[..8], &[0x08, 0, 0, 0, 0, 0, 42, 0]);
    }

    #[test]
    fn the_line_reads_back() {
        let outcome = FloodOutcome {
            sent: 300,
            refused: 2,
            seconds: 2.0,
        };
        assert_eq!(
            outcome.line(),
            "sent 300 datagrams (2 refused) in 2.00 s: 150/s"
        );
        assert_eq!(parse_rate(&outcome.line()), Some(150.0));
        assert_eq!(parse_rate("nonsense"), None);
    }

    #[test]
    fn floods_a_local_socket_briefly() {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let outcome = run(&FloodArgs {
            dst: sink.local_addr().unwrap(),
            rate: 1000,
            seconds: 0.05,
            sockets: 2,
        })
        .unwrap();
        assert!(outcome.sent > 0);
        assert!(run(&FloodArgs {
            dst: sink.local_addr().unwrap(),
            rate: 0,
            seconds: 1.0,
            sockets: 1,
        })
        .is_err());
    }
}

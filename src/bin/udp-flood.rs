//! `udp-flood DST:PORT RATE SECONDS [SOCKETS]`: the "unknown host" of issue 12's flood
//! benchmark. Sends RATE datagrams a second for SECONDS at DST:PORT, alternating between
//! garbage (8 to 100 random bytes, so mostly not VXLAN or with the I flag clear) and
//! well-formed VXLAN for VNI 42 carrying a 64-byte inner frame, which only an unknown VTEP
//! sends. They leave from SOCKETS sockets (default 16) with distinct source ports, so the
//! receiver spreads them over its sockets as a real host's flows would be. Paced in bursts
//! of 32; prints what it sent and the rate it reached (a busy machine may reach less).
//!
//! Run it in the namespace of the unknown host (`ip netns exec NS udp-flood ...`).

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const BURST: u64 = 32;

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

fn run(args: &[String]) -> Result<(), String> {
    let usage = "usage: udp-flood DST:PORT RATE SECONDS [SOCKETS]";
    let (dst, rate, seconds, sockets) = match args {
        [dst, rate, seconds, rest @ ..] if rest.len() <= 1 => (dst, rate, seconds, rest.first()),
        _ => return Err(usage.into()),
    };
    let dst: SocketAddr = dst.parse().map_err(|e| format!("{dst}: {e}"))?;
    let rate: u64 = rate.parse().map_err(|e| format!("rate {rate}: {e}"))?;
    let seconds: f64 = seconds
        .parse()
        .map_err(|e| format!("seconds {seconds}: {e}"))?;
    let sockets: usize = match sockets {
        Some(n) => n.parse().map_err(|e| format!("sockets {n}: {e}"))?,
        None => 16,
    };
    if rate == 0 || sockets == 0 || !seconds.is_finite() || seconds <= 0.0 {
        return Err(usage.into());
    }
    let sockets: Vec<UdpSocket> = (0..sockets)
        .map(|_| UdpSocket::bind(("0.0.0.0", 0)))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("binding a socket: {e}"))?;
    let mut prng = Prng(0x9e37_79b9_7f4a_7c15);
    let mut buf = Vec::with_capacity(128);
    let (start, length) = (Instant::now(), Duration::from_secs_f64(seconds));
    let (mut sent, mut refused) = (0u64, 0u64);
    while start.elapsed() < length {
        for _ in 0..BURST {
            datagram(&mut prng, sent + refused, &mut buf);
            let socket = &sockets[((sent + refused) % sockets.len() as u64) as usize];
            match socket.send_to(&buf, dst) {
                Ok(_) => sent += 1,
                // A full queue or an ICMP error from an earlier datagram: count and go on.
                Err(_) => refused += 1,
            }
        }
        let due = Duration::from_secs_f64((sent + refused) as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sent {sent} datagrams ({refused} refused) in {secs:.2} s: {:.0}/s",
        sent as f64 / secs
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-flood: {e}");
            ExitCode::FAILURE
        }
    }
}

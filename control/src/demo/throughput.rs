//! TCP throughput between two containers, measured in-process (no iperf3): a listener opened
//! inside the receiving container's namespace, a stream connected from inside the sending
//! one, 128 KiB writes pumped on one thread, bytes counted on another, and the counter
//! sampled once a second for a live display.
//!
//! Sockets keep the namespace they were created in, so [`netns::run_in`] only has to create
//! them; the threads that use them stay in the demo's own namespace. This module never
//! changes anything in a namespace and never runs longer than the requested duration plus a
//! few seconds of connect and drain.

use super::error::DemoError;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vxtap_dataplane::io::netns;

/// Size of each write, as the brief for the demo asks (and as iperf3 does by default).
const WRITE_SIZE: usize = 128 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A blocked write or read gives up after this long so the threads can notice the stop flag.
const IO_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the receiver keeps reading for the last bytes in flight after the stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the sampling loop looks at the interrupt flag.
const TICK: Duration = Duration::from_millis(50);

/// One end of the measurement: a container's label and namespace file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct End<'a> {
    /// The container's name, for messages.
    pub(crate) label: &'a str,
    /// Its namespace file (`/run/netns/NAME`).
    pub(crate) netns: &'a Path,
}

/// What a finished measurement saw.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Measurement {
    /// Bytes received during the measured window.
    pub(crate) bytes: u64,
    /// The window's length.
    pub(crate) elapsed: Duration,
    /// The first whole second in which nothing arrived: on a working path TCP is never
    /// idle that long, so the data plane broke.
    pub(crate) stalled_in: Option<u64>,
}

impl Measurement {
    /// Average rate over the window, in bits per second.
    pub(crate) fn bits_per_second(&self) -> f64 {
        bits_per_second(self.bytes, self.elapsed)
    }
}

/// `bytes` over `elapsed`, in bits per second (0 for an empty window).
pub(crate) fn bits_per_second(bytes: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        // u64 -> f64 loses precision only beyond 2^53 bytes, far past any demo run.
        let bits = bytes as f64 * 8.0;
        bits / seconds
    } else {
        0.0
    }
}

/// A rate for people: `3.41 Gbit/s`, `850.2 Mbit/s`, `12.0 kbit/s`, `0 bit/s`.
pub(crate) fn format_rate(bits_per_second: f64) -> String {
    if bits_per_second >= 1e9 {
        format!("{:.2} Gbit/s", bits_per_second / 1e9)
    } else if bits_per_second >= 1e6 {
        format!("{:.1} Mbit/s", bits_per_second / 1e6)
    } else if bits_per_second >= 1e3 {
        format!("{:.1} kbit/s", bits_per_second / 1e3)
    } else {
        format!("{bits_per_second:.0} bit/s")
    }
}

/// A byte count for people: `2.11 GB`, `350.0 MB`, `12.0 kB`, `17 B` (decimal units).
pub(crate) fn format_bytes(bytes: u64) -> String {
    // Display only: precision loss past 2^53 bytes does not matter.
    let value = bytes as f64;
    if value >= 1e9 {
        format!("{:.2} GB", value / 1e9)
    } else if value >= 1e6 {
        format!("{:.1} MB", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1} kB", value / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// Sends TCP from `from` to `to_ip:port` in `to` for `seconds`, calling `progress(second,
/// bits_per_second)` after each second, and returns the average.
///
/// # Errors
///
/// `Netns` if a namespace cannot be entered, `Throughput` if the connection cannot be made,
/// breaks, or carries nothing, `Interrupted` if `interrupt` is set meanwhile.
pub(crate) fn measure(
    from: End<'_>,
    to: End<'_>,
    to_ip: Ipv4Addr,
    seconds: u64,
    interrupt: &AtomicBool,
    mut progress: impl FnMut(u64, f64),
) -> Result<Measurement, DemoError> {
    let fail = |detail: String| DemoError::Throughput {
        from: from.label.to_owned(),
        to: to.label.to_owned(),
        detail,
    };
    let listener = netns::run_in(to.netns, || TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .map_err(|source| DemoError::Netns {
            netns: to.label.to_owned(),
            source,
        })?
        .map_err(|e| fail(format!("listening in {}: {e}", to.label)))?;
    let port = listener
        .local_addr()
        .map_err(|e| fail(format!("reading the listener's port: {e}")))?
        .port();
    let target = SocketAddr::from((to_ip, port));
    let sender = netns::run_in(from.netns, || {
        TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
    })
    .map_err(|source| DemoError::Netns {
        netns: from.label.to_owned(),
        source,
    })?
    .map_err(|e| fail(format!("connecting to {target}: {e}")))?;
    let receiver = accept(&listener, CONNECT_TIMEOUT)
        .map_err(|e| fail(format!("accepting on {target}: {e}")))?;
    drop(listener);
    for (socket, what) in [(&sender, "sender"), (&receiver, "receiver")] {
        socket
            .set_write_timeout(Some(IO_TIMEOUT))
            .and_then(|()| socket.set_read_timeout(Some(IO_TIMEOUT)))
            .and_then(|()| socket.set_nodelay(true))
            .map_err(|e| fail(format!("configuring the {what} socket: {e}")))?;
    }

    let stop = AtomicBool::new(false);
    let received = AtomicU64::new(0);
    let sender_done = AtomicBool::new(false);
    let (window, sent, got) = std::thread::scope(|scope| {
        let pump = scope.spawn(|| {
            let result = pump(&sender, &stop);
            sender_done.store(true, Ordering::SeqCst);
            result
        });
        let count = scope.spawn(|| count(&receiver, &received, &stop));
        let window = sample(seconds, &received, interrupt, &sender_done, &mut progress);
        stop.store(true, Ordering::SeqCst);
        let sent = pump.join();
        let got = count.join();
        (window, sent, got)
    });
    let sent = sent.map_err(|_| fail("the sending thread panicked".to_owned()))?;
    let got = got.map_err(|_| fail("the receiving thread panicked".to_owned()))?;
    let measurement = window?;
    sent.map_err(|e| fail(format!("sending: {e}")))?;
    got.map_err(|e| fail(format!("receiving: {e}")))?;
    if measurement.bytes == 0 {
        return Err(fail(format!(
            "no data arrived in {:.1} s",
            measurement.elapsed.as_secs_f64()
        )));
    }
    if let Some(second) = measurement.stalled_in {
        return Err(fail(format!(
            "the transfer stalled: nothing arrived during second {second} ({} in all)",
            format_bytes(measurement.bytes)
        )));
    }
    Ok(measurement)
}

/// Accepts one connection, waiting at most `timeout`.
fn accept(listener: &TcpListener, timeout: Duration) -> std::io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    "no connection arrived",
                ))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes until `stop`, then closes the sending direction; returns the bytes written.
fn pump(stream: &TcpStream, stop: &AtomicBool) -> std::io::Result<u64> {
    let block: Vec<u8> = (0..WRITE_SIZE).map(|i| (i % 251) as u8).collect();
    let mut sent = 0u64;
    let mut writer = stream;
    while !stop.load(Ordering::SeqCst) {
        match writer.write(&block) {
            Ok(n) => sent += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    stream.shutdown(Shutdown::Write)?;
    Ok(sent)
}

/// Reads and counts into `received` until the sender closes, or for at most
/// `DRAIN_TIMEOUT` after `stop`.
fn count(stream: &TcpStream, received: &AtomicU64, stop: &AtomicBool) -> std::io::Result<()> {
    let mut buf = vec![0u8; 2 * WRITE_SIZE];
    let mut reader = stream;
    let mut stopped_at = None;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                // The sender hanging up after the stop is the normal end.
                return if stop.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(e)
                };
            }
        }
        if stop.load(Ordering::SeqCst) {
            let since = *stopped_at.get_or_insert_with(Instant::now);
            if since.elapsed() >= DRAIN_TIMEOUT {
                return Ok(());
            }
        }
    }
}

/// Samples `received` once a second for `seconds`, reporting each second's rate; stops
/// early (returning what was measured so far) if the sender finished by itself, or with
/// `Interrupted`.
fn sample(
    seconds: u64,
    received: &AtomicU64,
    interrupt: &AtomicBool,
    sender_done: &AtomicBool,
    progress: &mut impl FnMut(u64, f64),
) -> Result<Measurement, DemoError> {
    let start = Instant::now();
    let mut last_bytes = 0;
    let mut last_time = start;
    let mut stalled_in = None;
    for second in 1..=seconds {
        let due = start + Duration::from_secs(second);
        loop {
            if interrupt.load(Ordering::SeqCst) {
                return Err(DemoError::Interrupted);
            }
            let now = Instant::now();
            if now >= due || sender_done.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(TICK.min(due - now));
        }
        let now = Instant::now();
        let bytes = received.load(Ordering::Relaxed);
        progress(second, bits_per_second(bytes - last_bytes, now - last_time));
        if bytes == last_bytes && now >= due {
            stalled_in.get_or_insert(second);
        }
        last_bytes = bytes;
        last_time = now;
        if sender_done.load(Ordering::SeqCst) {
            break;
        }
    }
    Ok(Measurement {
        bytes: last_bytes,
        elapsed: last_time - start,
        stalled_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_bits_per_second() {
        assert!((bits_per_second(125_000_000, Duration::from_secs(1)) - 1e9).abs() < 1e-3);
        assert!((bits_per_second(1_000, Duration::from_millis(500)) - 16_000.0).abs() < 1e-9);
        assert!(bits_per_second(1_000, Duration::ZERO).abs() < f64::EPSILON);
        let m = Measurement {
            bytes: 2_500_000_000,
            elapsed: Duration::from_secs(5),
            stalled_in: None,
        };
        assert!((m.bits_per_second() - 4e9).abs() < 1e-3);
    }

    #[test]
    fn formats_rates_in_the_right_unit() {
        assert_eq!(format_rate(3_412_000_000.0), "3.41 Gbit/s");
        assert_eq!(format_rate(1e9), "1.00 Gbit/s");
        assert_eq!(format_rate(850_240_000.0), "850.2 Mbit/s");
        assert_eq!(format_rate(12_000.0), "12.0 kbit/s");
        assert_eq!(format_rate(0.0), "0 bit/s");
        assert_eq!(format_bytes(2_110_000_000), "2.11 GB");
        assert_eq!(format_bytes(350_000_000), "350.0 MB");
        assert_eq!(format_bytes(12_000), "12.0 kB");
        assert_eq!(format_bytes(17), "17 B");
    }

    #[test]
    fn sampling_reports_each_second_and_stops_when_the_sender_does() {
        // The sender already finished: sampling ends after the first report, with no waiting.
        let received = AtomicU64::new(1000);
        let interrupt = AtomicBool::new(false);
        let done = AtomicBool::new(true);
        let mut seen = Vec::new();
        let m = sample(10, &received, &interrupt, &done, &mut |s, _| seen.push(s)).unwrap();
        assert_eq!(seen, [1]);
        assert_eq!(m.bytes, 1000);
        // Cut short by the sender, not a whole second without data: no stall.
        assert_eq!(m.stalled_in, None);
        // A whole second without data is a stall (this waits one real second).
        let not_done = AtomicBool::new(false);
        let nothing = AtomicU64::new(0);
        let m = sample(1, &nothing, &interrupt, &not_done, &mut |_, _| {}).unwrap();
        assert_eq!(m.stalled_in, Some(1));
        let interrupt = AtomicBool::new(true);
        let err = sample(10, &received, &interrupt, &done, &mut |_, _| {}).unwrap_err();
        assert!(matches!(err, DemoError::Interrupted));
    }

    #[test]
    fn measures_over_loopback() {
        // Both ends in the test's own namespace: exercises the threads and the stop, not vxtap.
        let here = Path::new("/proc/thread-self/ns/net");
        if std::fs::File::open(here).is_err() {
            return;
        }
        let end = End {
            label: "here",
            netns: here,
        };
        let interrupt = AtomicBool::new(false);
        let mut reports = 0;
        let result = measure(end, end, Ipv4Addr::LOCALHOST, 1, &interrupt, |_, _| {
            reports += 1
        });
        match result {
            Ok(m) => {
                assert!(m.bytes > 0);
                assert_eq!(reports, 1);
            }
            // Entering a namespace needs CAP_SYS_ADMIN; without it there is nothing to test.
            Err(DemoError::Netns { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

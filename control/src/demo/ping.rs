//! Pinging one container from another with iputils' `ping` under `ip netns exec` (which also
//! bind-mounts `/etc/netns/NS/hosts` over `/etc/hosts`, so names the daemon wrote resolve),
//! retried for a few seconds while the remote endpoint reaches the tables.
//!
//! [`PingSummary::parse`] is pure; [`ping_until`] runs commands and never changes anything.

use super::cmd::{self, Limits};
use super::error::DemoError;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Echo requests per attempt.
const COUNT: &str = "3";
/// Seconds between them.
const INTERVAL: &str = "0.2";
/// Seconds to wait for each reply.
const WAIT: &str = "2";
/// Limit for one `ping` run (3 requests, 0.2 s apart, 2 s for the last reply, plus slack).
const PING_SECONDS: u64 = 10;

/// The two summary lines of an iputils `ping` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PingSummary {
    /// Echo requests sent.
    pub(crate) transmitted: u32,
    /// Replies received.
    pub(crate) received: u32,
    /// `rtt min/avg/max/mdev = 0.080/0.112/0.161/0.034 ms`, when any reply came.
    pub(crate) rtt: Option<String>,
}

impl PingSummary {
    /// Finds the summary in ping's output (`N packets transmitted, M received, ...` and the
    /// `rtt` line).
    pub(crate) fn parse(output: &str) -> Option<Self> {
        let counts = output.lines().find(|l| l.contains("packets transmitted"))?;
        let mut fields = counts.split(',').map(str::trim);
        let transmitted = leading_number(fields.next()?)?;
        let received = leading_number(fields.next()?)?;
        let rtt = output
            .lines()
            .find(|l| l.starts_with("rtt ") || l.starts_with("round-trip "))
            .map(|l| l.trim().to_owned());
        Some(Self {
            transmitted,
            received,
            rtt,
        })
    }

    /// `3/3 replies, rtt min/avg/max/mdev = ... ms`.
    pub(crate) fn describe(&self) -> String {
        let mut text = format!("{}/{} replies", self.received, self.transmitted);
        if let Some(rtt) = &self.rtt {
            text.push_str(", ");
            text.push_str(rtt);
        }
        text
    }

    /// The average round trip (`0.112 ms`), from the `rtt` line.
    pub(crate) fn average(&self) -> Option<String> {
        let (names, values) = self.rtt.as_deref()?.split_once('=')?;
        let position = names
            .trim()
            .rsplit(' ')
            .next()?
            .split('/')
            .position(|n| n == "avg")?;
        let values = values.trim();
        let (numbers, unit) = values.split_once(' ').unwrap_or((values, ""));
        let average = numbers.split('/').nth(position)?;
        Some(format!("{average} {unit}").trim_end().to_owned())
    }
}

fn leading_number(field: &str) -> Option<u32> {
    field.split_whitespace().next()?.parse().ok()
}

/// Pings `target` from the namespace `from_netns` until a run gets replies or `patience`
/// has passed.
///
/// # Errors
///
/// `Ping` with the last run's summary or error when no reply ever came, `Interrupted`.
pub(crate) fn ping_until(
    ip: &Path,
    ping: &Path,
    from_netns: &str,
    from_label: &str,
    target: &str,
    patience: Duration,
    interrupt: &AtomicBool,
) -> Result<PingSummary, DemoError> {
    let start = Instant::now();
    loop {
        let mut command = Command::new(ip);
        command
            .args(["netns", "exec", from_netns])
            .arg(ping)
            .args(["-c", COUNT, "-i", INTERVAL, "-W", WAIT, target]);
        let out = cmd::output(&mut command, Limits::interruptible(interrupt, PING_SECONDS))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = PingSummary::parse(&stdout);
        if let Some(summary) = &summary {
            if summary.received > 0 {
                return Ok(summary.clone());
            }
        }
        if start.elapsed() >= patience {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let detail = match summary {
                Some(s) => s.describe(),
                None if !stderr.trim().is_empty() => cmd::last_lines(&stderr, 3),
                None => format!("ping exited with {}", out.status),
            };
            return Err(DemoError::Ping {
                from: from_label.to_owned(),
                target: target.to_owned(),
                detail: format!("{detail} (retried for {} s)", patience.as_secs()),
            });
        }
        // A name that does not resolve fails at once; do not spin on it.
        let pause = Instant::now() + Duration::from_millis(500);
        while Instant::now() < pause {
            if interrupt.load(Ordering::SeqCst) {
                return Err(DemoError::Interrupted);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
PING 10.0.0.3 (10.0.0.3) 56(84) bytes of data.
64 bytes from 10.0.0.3: icmp_seq=1 ttl=64 time=0.161 ms
64 bytes from 10.0.0.3: icmp_seq=2 ttl=64 time=0.095 ms
64 bytes from 10.0.0.3: icmp_seq=3 ttl=64 time=0.080 ms

--- 10.0.0.3 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 405ms
rtt min/avg/max/mdev = 0.080/0.112/0.161/0.034 ms
";

    const LOST: &str = "\
PING 10.0.0.3 (10.0.0.3) 56(84) bytes of data.

--- 10.0.0.3 ping statistics ---
3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 410ms
";

    #[test]
    fn parses_the_summary() {
        let s = PingSummary::parse(GOOD).unwrap();
        assert_eq!((s.transmitted, s.received), (3, 3));
        assert_eq!(
            s.describe(),
            "3/3 replies, rtt min/avg/max/mdev = 0.080/0.112/0.161/0.034 ms"
        );
        let s = PingSummary::parse(LOST).unwrap();
        assert_eq!((s.transmitted, s.received), (3, 0));
        assert_eq!(s.rtt, None);
        assert_eq!(s.describe(), "0/3 replies");
        assert_eq!(s.average(), None);
        let s = PingSummary::parse(GOOD).unwrap();
        assert_eq!(s.average().as_deref(), Some("0.112 ms"));
        let busybox = PingSummary {
            transmitted: 1,
            received: 1,
            rtt: Some("round-trip min/avg/max = 0.1/0.2/0.3 ms".into()),
        };
        assert_eq!(busybox.average().as_deref(), Some("0.2 ms"));
        assert_eq!(
            PingSummary::parse("ping: server: Name or service not known"),
            None
        );
        assert_eq!(
            PingSummary::parse("x packets transmitted, y received"),
            None
        );
    }
}

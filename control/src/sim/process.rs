//! [`SimProcess`]: a running `vxtap sim`, driven over its stdin and stdout by the
//! control-plane benchmark and the scale tests. Every wait for an answer is bounded; dropping
//! it sends `quit` (revoking the simulated leases) and, if the simulator does not exit in
//! time, kills it. It signals only the process it started.

use super::SimError;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long populating may take (1000 hosts × 10 endpoints take a few seconds).
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one command may take.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `quit` may take (revoking every lease).
const QUIT_TIMEOUT: Duration = Duration::from_secs(60);

/// What `add` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The endpoint's store key.
    pub key: String,
    /// Its IP.
    pub ip: Ipv4Addr,
    /// Its MAC, as vxtap writes it.
    pub mac: String,
    /// The wall-clock time just before the write.
    pub at: SystemTime,
}

/// What `kill` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Killed {
    /// When the host's lease was last refreshed (the answer arrived).
    pub last_refresh: SystemTime,
    /// The lease's TTL.
    pub ttl: Duration,
}

/// A running simulator.
#[derive(Debug)]
pub struct SimProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// The simulated network's id, from the `ready` line.
    pub network_id: String,
    /// Simulated hosts.
    pub hosts: usize,
    /// Endpoints written at start.
    pub endpoints: usize,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> SimError {
    move |source| SimError::Io { what, source }
}

/// Parses `SECONDS.MICROS` as the simulator prints times.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let (seconds, micros) = text.split_once('.')?;
    let seconds: u64 = seconds.parse().ok()?;
    let micros: u64 = micros.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds) + Duration::from_micros(micros))
}

impl SimProcess {
    /// Spawns `command` (which must run `vxtap sim ...`, perhaps through `nsenter`) with its
    /// stdin and stdout piped (stderr is inherited) and waits for its `ready` line.
    ///
    /// # Errors
    ///
    /// `Io` if it cannot start, `Shape` if it exits or answers something else.
    pub fn spawn(mut command: Command) -> Result<SimProcess, SimError> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(io("starting vxtap sim"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (send, lines) = mpsc::channel();
        if let Some(stdout) = stdout {
            std::thread::Builder::new()
                .name("vxtap-sim-reader".to_owned())
                .spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { return };
                        if send.send(line).is_err() {
                            return;
                        }
                    }
                })
                .map_err(io("starting the simulator's reader"))?;
        }
        let mut sim = SimProcess {
            child,
            stdin,
            lines,
            network_id: String::new(),
            hosts: 0,
            endpoints: 0,
        };
        let ready = sim.line(READY_TIMEOUT)?;
        match ready.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["ready", hosts, endpoints, network] => {
                sim.hosts = hosts.parse().unwrap_or(0);
                sim.endpoints = endpoints.parse().unwrap_or(0);
                sim.network_id = (*network).to_owned();
                Ok(sim)
            }
            _ => Err(SimError::Shape(format!(
                "vxtap sim said {ready:?} instead of ready"
            ))),
        }
    }

    /// The next line of stdout, waiting at most `limit`.
    fn line(&mut self, limit: Duration) -> Result<String, SimError> {
        match self.lines.recv_timeout(limit) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => Err(SimError::Shape(format!(
                "vxtap sim did not answer within {} s",
                limit.as_secs()
            ))),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map_err(io("waiting for vxtap sim"))?;
                Err(SimError::Shape(format!("vxtap sim exited ({status})")))
            }
        }
    }

    /// Sends `command` and returns the words of its `ok` answer.
    ///
    /// # Errors
    ///
    /// `Shape` for an `err` answer (with its text), a timeout or an exit; `Io` for a
    /// broken pipe.
    pub fn command(&mut self, command: &str) -> Result<Vec<String>, SimError> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| SimError::Shape("vxtap sim's stdin is closed".to_owned()))?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .map_err(io("writing to vxtap sim"))?;
        let answer = self.line(ANSWER_TIMEOUT)?;
        let mut words = answer.split_whitespace().map(str::to_owned);
        match words.next().as_deref() {
            Some("ok") => Ok(words.collect()),
            _ => Err(SimError::Shape(format!("vxtap sim: {command}: {answer}"))),
        }
    }

    /// `add HOST`.
    ///
    /// # Errors
    ///
    /// As for [`command`](Self::command), or an answer that does not parse.
    pub fn add(&mut self, host: usize) -> Result<Added, SimError> {
        let words = self.command(&format!("add {host}"))?;
        let parsed = match words.as_slice() {
            [key, ip, mac, at] => ip.parse().ok().zip(parse_time(at)).map(|(ip, at)| Added {
                key: key.clone(),
                ip,
                mac: mac.clone(),
                at,
            }),
            _ => None,
        };
        parsed.ok_or_else(|| SimError::Shape(format!("vxtap sim: add {host}: {words:?}")))
    }

    /// `del KEY`; the time just before the delete.
    ///
    /// # Errors
    ///
    /// As for [`command`](Self::command).
    pub fn del(&mut self, key: &str) -> Result<SystemTime, SimError> {
        let words = self.command(&format!("del {key}"))?;
        words
            .first()
            .and_then(|t| parse_time(t))
            .ok_or_else(|| SimError::Shape(format!("vxtap sim: del {key}: {words:?}")))
    }

    /// `kill HOST`.
    ///
    /// # Errors
    ///
    /// As for [`command`](Self::command).
    pub fn kill(&mut self, host: usize) -> Result<Killed, SimError> {
        let words = self.command(&format!("kill {host}"))?;
        let parsed = match words.as_slice() {
            [at, ttl] => parse_time(at)
                .zip(ttl.parse::<u64>().ok())
                .map(|(last_refresh, ttl)| Killed {
                    last_refresh,
                    ttl: Duration::from_secs(ttl),
                }),
            _ => None,
        };
        parsed.ok_or_else(|| SimError::Shape(format!("vxtap sim: kill {host}: {words:?}")))
    }

    /// `quit`: revokes every simulated lease and waits for the simulator to exit.
    ///
    /// # Errors
    ///
    /// As for [`command`](Self::command), or a failed exit.
    pub fn quit(mut self) -> Result<(), SimError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), SimError> {
        if self.stdin.is_none() {
            return Ok(());
        }
        let answer = self.command("quit");
        drop(self.stdin.take());
        let deadline = Instant::now() + QUIT_TIMEOUT;
        loop {
            match self.child.try_wait().map_err(io("waiting for vxtap sim"))? {
                Some(status) if status.success() => return answer.map(|_| ()),
                Some(status) => {
                    return Err(SimError::Shape(format!("vxtap sim exited ({status})")))
                }
                None if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(SimError::Shape("vxtap sim did not exit; killed".to_owned()));
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_printed() {
        let t = parse_time("1700000000.000123").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_micros(1_700_000_000_000_123)
        );
        assert_eq!(parse_time("12"), None);
        assert_eq!(parse_time("x.1"), None);
    }
}

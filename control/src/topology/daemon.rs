//! [`DaemonProcess`]: a `vxtap daemon` started inside a host namespace, with its run
//! directory and log file; waited for until its admin socket answers, stopped with SIGTERM
//! (then SIGKILL) when dropped. [`VtepControl`] is what the topology builder needs of a
//! host's daemon: running `vxtap ARGS` against it (to add links, fdb and neigh entries).
//!
//! This module starts only the processes its callers ask for and signals only those.

use super::TopologyError;
use crate::plumbing;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a daemon may take to open its admin socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a daemon may take to exit after SIGTERM (it waits up to 11 s for admin clients).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Limit for one `vxtap` command (the client itself waits up to 30 s for an answer).
pub const VXTAP_TIMEOUT: Duration = Duration::from_secs(40);
/// Daemon log lines shown when something fails.
const LOG_LINES: usize = 12;

/// What the topology builder needs of a host's daemon.
pub trait VtepControl {
    /// Runs `vxtap ARGS...` against this daemon and returns its stdout.
    ///
    /// # Errors
    ///
    /// The command fails (the error holds its stderr) or cannot run.
    fn vxtap(&self, args: &[&str]) -> Result<String, TopologyError>;
}

/// A running `vxtap daemon`.
#[derive(Debug)]
pub struct DaemonProcess {
    label: String,
    child: Option<Child>,
    binary: PathBuf,
    run_dir: PathBuf,
    log: PathBuf,
}

impl DaemonProcess {
    /// Starts `binary --run-dir RUN_DIR daemon ARGS...` inside `netns` (through `nsenter
    /// --net`, which execs it: the child's pid is the daemon's, and it shares this process's
    /// mount namespace), with stdout and stderr appended to `log`, and waits until its admin
    /// socket answers (giving up once `interrupt` is set).
    ///
    /// # Errors
    ///
    /// `Io` for the log, `DaemonStart` if it cannot start, exits or stays silent,
    /// `Interrupted`.
    pub fn start(
        label: &str,
        netns: &Path,
        binary: &Path,
        run_dir: &Path,
        log: &Path,
        args: &[OsString],
        interrupt: Option<&AtomicBool>,
    ) -> Result<DaemonProcess, TopologyError> {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", netns.display()))
            .arg(binary)
            .arg("--run-dir")
            .arg(run_dir)
            .arg("daemon")
            .args(args)
            // A log file, not a terminal: no colour codes.
            .env("NO_COLOR", "1")
            // It runs ip, nsenter and unshare by name.
            .env("PATH", super::programs::child_path());
        let mut daemon = DaemonProcess::spawn(label, command, binary, run_dir, log)?;
        daemon.wait_ready(START_TIMEOUT, interrupt)?;
        Ok(daemon)
    }

    /// Spawns `command`, which must exec the daemon (so the child's pid is the daemon's) and
    /// give it `run_dir` as its run directory, with stdout and stderr appended to `log`.
    /// Does not wait for it; see [`wait_ready`](Self::wait_ready).
    ///
    /// # Errors
    ///
    /// `Io` for the log, `DaemonStart` if it cannot be spawned.
    pub fn spawn(
        label: &str,
        mut command: Command,
        binary: &Path,
        run_dir: &Path,
        log: &Path,
    ) -> Result<DaemonProcess, TopologyError> {
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(TopologyError::io("opening", log))
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?)
            .spawn()
            .map_err(|e| TopologyError::DaemonStart {
                host: label.to_owned(),
                problem: format!("cannot be started ({e})"),
                log: log.to_owned(),
                tail: String::new(),
            })?;
        Ok(DaemonProcess {
            label: label.to_owned(),
            child: Some(child),
            binary: binary.to_owned(),
            run_dir: run_dir.to_owned(),
            log: log.to_owned(),
        })
    }

    /// Waits until the daemon accepts a connection on its admin socket.
    ///
    /// # Errors
    ///
    /// `DaemonStart` if it exits or stays silent for `limit` (with the end of its log),
    /// `Interrupted` once `interrupt` is set.
    pub fn wait_ready(
        &mut self,
        limit: Duration,
        interrupt: Option<&AtomicBool>,
    ) -> Result<(), TopologyError> {
        let socket = self.socket();
        let start = Instant::now();
        loop {
            if interrupt.is_some_and(|i| i.load(Ordering::SeqCst)) {
                return Err(TopologyError::Interrupted);
            }
            if UnixStream::connect(&socket).is_ok() {
                return Ok(());
            }
            let problem = match self.child.as_mut().map(Child::try_wait) {
                None => Some("is not running".to_owned()),
                Some(Ok(Some(status))) => Some(format!("exited ({status})")),
                Some(Ok(None)) if start.elapsed() >= limit => Some(format!(
                    "did not open {} within {} s",
                    socket.display(),
                    limit.as_secs()
                )),
                Some(Ok(None)) => None,
                Some(Err(e)) => Some(format!("cannot be waited for ({e})")),
            };
            if let Some(problem) = problem {
                return Err(TopologyError::DaemonStart {
                    host: self.label.clone(),
                    problem,
                    log: self.log.clone(),
                    tail: log_tail(&self.log, LOG_LINES),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The host label it was started under.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Its admin socket.
    pub fn socket(&self) -> PathBuf {
        crate::client::socket_path(&self.run_dir)
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The telling part of its log (see [`log_excerpt`]).
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, LOG_LINES)
    }

    /// A `vxtap --run-dir RUN_DIR` command aimed at this daemon (run from anywhere: it only
    /// talks to the admin socket).
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--run-dir").arg(&self.run_dir);
        command
    }

    /// How it ended, if it has (`None` while it runs).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(status)) => status,
            _ => None,
        }
    }

    /// CPU time (user + system, in clock ticks) the daemon has used so far, all its threads
    /// included, live and exited (`/proc/PID/stat` fields 14 and 15).
    ///
    /// # Errors
    ///
    /// `Io` if the file cannot be read or does not parse (the daemon is gone).
    pub fn cpu_ticks(&self) -> Result<u64, TopologyError> {
        let path = PathBuf::from(format!("/proc/{}/stat", self.pid().unwrap_or(0)));
        let text = std::fs::read_to_string(&path).map_err(TopologyError::io("reading", &path))?;
        stat_cpu_ticks(&text).ok_or_else(|| TopologyError::Io {
            action: "parsing",
            path,
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        })
    }

    /// SIGKILL, as a crash would: nothing gets cleaned up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, a wait of at most `limit`, then SIGKILL. Returns how it exited, or `None`
    /// if it had to be killed (or was stopped already).
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if let Some(pid) = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            // ESRCH means it exited just now; try_wait below collects it.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// [`terminate`](Self::terminate) with [`STOP_TIMEOUT`], as a cleanup step: a clean exit
    /// is `Ok(None)`, a daemon that had exited before is a remark, anything else an error.
    ///
    /// # Errors
    ///
    /// `DaemonStop`: it exited with a failure, or had to be killed.
    pub fn stop(&mut self) -> Result<Option<String>, TopologyError> {
        let Some(pid) = self.pid() else {
            return Ok(Some("it was stopped already".to_owned()));
        };
        if let Some(status) = self.exited() {
            self.child = None;
            return Ok(Some(format!("it had already exited ({status})")));
        }
        let host = self.label.clone();
        let failed = |problem: String| TopologyError::DaemonStop { host, pid, problem };
        match self.terminate(STOP_TIMEOUT) {
            Some(status) if status.success() => Ok(None),
            Some(status) => Err(failed(format!("it exited with {status}"))),
            None => Err(failed(format!(
                "it did not exit within {} s of SIGTERM and was killed",
                STOP_TIMEOUT.as_secs()
            ))),
        }
    }
}

impl VtepControl for DaemonProcess {
    fn vxtap(&self, args: &[&str]) -> Result<String, TopologyError> {
        let mut command = self.command();
        command.args(args);
        let line = format!("vxtap {}", args.join(" "));
        let out = plumbing::run(&mut command, &line, VXTAP_TIMEOUT)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(TopologyError::Vxtap {
                host: self.label.clone(),
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.terminate(STOP_TIMEOUT);
    }
}

/// utime + stime from the text of a `/proc/PID/stat` file. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The telling part of the log at `path` (see [`log_excerpt`]), or why it cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => log_excerpt(&text, lines),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// At most `lines` lines of a daemon log: from the first panic message up to its backtrace
/// (whose tail says nothing), or else the last non-empty lines.
pub fn log_excerpt(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    match all.iter().position(|l| l.contains("panicked at")) {
        Some(start) => all[start..]
            .iter()
            .take_while(|l| !l.starts_with("stack backtrace:"))
            .take(lines)
            .copied()
            .collect::<Vec<_>>()
            .join("\n"),
        None => last_lines(text, lines),
    }
}

/// The last `n` non-empty lines of `text`, joined by newlines.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "4242 (vxtap (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 9 0 1234 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(325));
        assert_eq!(stat_cpu_ticks("4242 (vxtap) S 1 2"), None);
        assert_eq!(stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn log_excerpts_show_the_panic_not_the_backtrace() {
        let log = "INFO started\nthread 'main' panicked at src/x.rs:8:9:\nnot yet\n\
                   stack backtrace:\n   0: frame\n   1: frame\n";
        assert_eq!(
            log_excerpt(log, 10),
            "thread 'main' panicked at src/x.rs:8:9:\nnot yet"
        );
        assert_eq!(log_excerpt("a\nb\n\nc\n", 2), "b\nc");
    }
}

//! Running the programs the demo drives (`ip`, `nsenter`, `ping`, and `vxtap` itself): found
//! by absolute path, started in a process group of their own, waited for with a time limit,
//! and killed early when the demo is interrupted.
//!
//! A child in its own process group does not see the terminal's Ctrl-C; the demo does, and
//! decides what to stop. A failed command becomes a [`DemoError::Command`] holding its
//! command line and the end of its stderr. This module never changes anything by itself.

use super::error::DemoError;
pub(crate) use crate::topology::last_lines;
pub(crate) use crate::topology::programs::{child_path, find_program};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Lines of a failed command's output kept in the error.
const ERROR_LINES: usize = 6;

/// How long a command that creates something may go on after an interrupt: killing it
/// halfway would leave the demo unsure whether the thing exists.
const GRACE: Duration = Duration::from_secs(5);

/// How a command is waited for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits<'a> {
    /// Kill the command after this long.
    timeout: Duration,
    /// Kill the command once this flag has been set for `grace` (`None` during cleanup,
    /// which must run).
    interrupt: Option<&'a AtomicBool>,
    grace: Duration,
}

impl<'a> Limits<'a> {
    /// Killed at once on interrupt (for commands that change nothing, like `ping`), or after
    /// `seconds`.
    pub(crate) fn interruptible(interrupt: &'a AtomicBool, seconds: u64) -> Self {
        Self {
            timeout: Duration::from_secs(seconds),
            interrupt: Some(interrupt),
            grace: Duration::ZERO,
        }
    }

    /// Left a few seconds to finish after an interrupt (for commands that create things,
    /// which then get recorded for cleanup), killed after `seconds` in any case.
    pub(crate) fn finishing(interrupt: &'a AtomicBool, seconds: u64) -> Self {
        Self {
            grace: GRACE,
            ..Self::interruptible(interrupt, seconds)
        }
    }

    /// Not interruptible (cleanup), killed after `seconds`.
    pub(crate) fn cleanup(seconds: u64) -> Self {
        Self {
            timeout: Duration::from_secs(seconds),
            interrupt: None,
            grace: Duration::ZERO,
        }
    }

    fn interrupted(&self) -> bool {
        self.interrupt
            .is_some_and(|flag| flag.load(Ordering::SeqCst))
    }
}

/// The command line of `cmd`, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

/// Starts `cmd` in a process group of its own with stdin closed and the given stdout and
/// stderr.
pub(crate) fn spawn(cmd: &mut Command, stdout: Stdio, stderr: Stdio) -> Result<Child, DemoError> {
    cmd.stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|source| DemoError::Spawn {
            command: describe(cmd),
            source,
        })
}

/// Runs `cmd` to completion and returns its output, whatever its exit status.
///
/// # Errors
///
/// `Spawn` if it cannot start, `Timeout` or `Interrupted` if it was killed (its output is
/// then lost).
pub(crate) fn output(cmd: &mut Command, limits: Limits<'_>) -> Result<Output, DemoError> {
    let mut child = spawn(cmd, Stdio::piped(), Stdio::piped())?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    std::thread::scope(|scope| {
        // Readers run alongside the wait, so a chatty child never blocks on a full pipe.
        let out = scope.spawn(move || drain(stdout));
        let err = scope.spawn(move || drain(stderr));
        let status = wait(&mut child, cmd, limits);
        // A killed child's pipes close with it, so the readers finish either way.
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        Ok(Output {
            status: status?,
            stdout,
            stderr,
        })
    })
}

/// Runs `cmd` and returns its stdout.
///
/// # Errors
///
/// As [`output`], plus `Command` (with the end of stderr) if it exits unsuccessfully.
pub(crate) fn checked(cmd: &mut Command, limits: Limits<'_>) -> Result<String, DemoError> {
    let out = output(cmd, limits)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(failure(cmd, &out))
    }
}

/// The error for a command that ran and failed.
pub(crate) fn failure(cmd: &Command, out: &Output) -> DemoError {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        stderr.into_owned()
    };
    DemoError::Command {
        command: describe(cmd),
        status: out.status.to_string(),
        stderr: last_lines(&text, ERROR_LINES),
    }
}

fn drain(pipe: Option<impl Read>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        // A read error only shortens the captured output; the exit status still tells.
        let _ = pipe.read_to_end(&mut bytes);
    }
    bytes
}

/// Waits for `child`, killing it on timeout or interrupt.
fn wait(
    child: &mut Child,
    cmd: &Command,
    limits: Limits<'_>,
) -> Result<std::process::ExitStatus, DemoError> {
    let start = Instant::now();
    let mut interrupted_at = None;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().map_err(|source| DemoError::Spawn {
            command: describe(cmd),
            source,
        })? {
            // Finished despite an interrupt: the caller checks the flag next.
            return Ok(status);
        }
        if interrupted_at.is_none() && limits.interrupted() {
            interrupted_at = Some(Instant::now());
        }
        let stop = if interrupted_at.is_some_and(|at: Instant| at.elapsed() >= limits.grace) {
            Some(DemoError::Interrupted)
        } else if start.elapsed() >= limits.timeout {
            Some(DemoError::Timeout {
                command: describe(cmd),
                seconds: limits.timeout.as_secs(),
            })
        } else {
            None
        };
        if let Some(error) = stop {
            // Already gone is fine: either way it is not running any more.
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_skips_blank_lines() {
        assert_eq!(last_lines("a\n\nb\nc\n\n", 2), "b\nc");
        assert_eq!(last_lines("only\n", 5), "only");
        assert_eq!(last_lines("", 3), "");
    }

    #[test]
    fn runs_and_reports_failures() {
        let flag = AtomicBool::new(false);
        let limits = Limits::interruptible(&flag, 10);
        let out = checked(Command::new("sh").args(["-c", "echo hi"]), limits).unwrap();
        assert_eq!(out, "hi\n");
        let err = checked(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            limits,
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("sh -c echo oops"), "{message}");
        assert!(message.contains("oops"), "{message}");
        assert!(message.contains('3'), "{message}");
    }

    #[test]
    fn interrupt_and_timeout_kill_the_child() {
        let flag = AtomicBool::new(true);
        let err = output(
            Command::new("sleep").arg("30"),
            Limits::interruptible(&flag, 30),
        )
        .unwrap_err();
        assert!(matches!(err, DemoError::Interrupted), "{err}");
        let err = output(Command::new("sleep").arg("30"), Limits::cleanup(0)).unwrap_err();
        assert!(matches!(err, DemoError::Timeout { .. }), "{err}");
        // A command that finishes within the grace period after an interrupt succeeds.
        let out = checked(
            Command::new("sh").args(["-c", "sleep 0.1; echo made"]),
            Limits::finishing(&flag, 30),
        )
        .unwrap();
        assert_eq!(out, "made\n");
    }
}

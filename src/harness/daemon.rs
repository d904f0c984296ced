//! [`Daemon`]: the real `vxtap daemon` running inside a host namespace, and the `vxtap`
//! commands that talk to it.
//!
//! Each daemon gets a run directory of its own under /tmp (passed as `VXTAP_RUN_DIR`), so
//! several "hosts" share the machine; its stderr goes to `daemon.log` there and is printed
//! when a test fails. Dropping the guard stops it with SIGTERM (SIGKILL if it does not exit
//! in time) and removes the run directory.

use super::cmd;
use super::netns::Netns;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;
use vxtap::topology::{DaemonProcess, START_TIMEOUT};

/// How long a daemon may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The `vxtap` binary: `$VXTAP_BIN`, or `vxtap` in the target directory that holds the
/// running test executable (`target/debug/deps/dropin-*` -> `target/debug/vxtap`).
///
/// # Panics
///
/// If it does not exist.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("VXTAP_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("vxtap"))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the vxtap binary is missing (looked for {candidates:?}); build it first: \
                 cargo build -p vxtap"
            )
        })
}

/// `vxtap ARGS...` aimed at the run directory `run_dir`, whatever the exit status (for a
/// directory where no daemon runs, say).
pub fn cli_at(run_dir: &Path, args: &[&str]) -> Output {
    cmd::output(
        Command::new(binary())
            .args(args)
            .env("VXTAP_RUN_DIR", run_dir),
    )
}

/// A `vxtap daemon --threads 2` running in a host namespace.
#[derive(Debug)]
pub struct Daemon {
    /// The process (the topology builder's); stopped before the run directory goes.
    process: DaemonProcess,
    /// The run directory when the guard made it (removed on drop); `None` when the caller
    /// owns it (a daemon restarted in the same directory).
    _owned_dir: Option<tempfile::TempDir>,
    host: String,
}

impl Daemon {
    /// Starts a daemon in `host` and waits (bounded) until its admin socket answers.
    ///
    /// # Panics
    ///
    /// If the binary is missing, the daemon exits, or the socket does not appear in time;
    /// the message holds the daemon's log.
    pub fn start(host: &Netns) -> Daemon {
        Daemon::start_with(host, &[])
    }

    /// [`start`](Self::start) with extra daemon arguments (e.g. `--port`).
    pub fn start_with(host: &Netns, extra: &[&str]) -> Daemon {
        super::require_root();
        let run_dir = tempfile::Builder::new()
            .prefix("vxtap-test-")
            .tempdir_in("/tmp")
            .expect("a run directory under /tmp");
        let command = host.command(binary());
        let path = run_dir.path().to_owned();
        Daemon::launch(command, host, path, Some(run_dir), extra)
    }

    /// [`start_with`](Self::start_with), with the binary started through `wrapper` inside
    /// `host`: `wrapper` is a program and its arguments that end by running the command
    /// appended to them, and must exec it so the child's pid stays the daemon's (e.g.
    /// `["prlimit", "--nofile=64:64", "--"]`, or `["sh", "-c", "umask 000; exec \"$@\"",
    /// "sh"]`).
    pub fn start_via(host: &Netns, wrapper: &[&str], extra: &[&str]) -> Daemon {
        super::require_root();
        let (program, args) = wrapper.split_first().expect("a wrapper program");
        let run_dir = tempfile::Builder::new()
            .prefix("vxtap-test-")
            .tempdir_in("/tmp")
            .expect("a run directory under /tmp");
        let mut command = host.command(program);
        command.args(args).arg(binary());
        let path = run_dir.path().to_owned();
        Daemon::launch(command, host, path, Some(run_dir), extra)
    }

    /// A control-plane daemon (`extra` holds `--host`, `--local-ip`, `--store`) in `host`,
    /// with the run directory `run_dir` that the caller owns, so a restarted daemon finds
    /// what the last one left there. It is started with `nsenter --net`, not `ip netns
    /// exec`: it must share the machine's mount namespace, where it bind-mounts overlay
    /// namespaces that outlive it. Its log is appended to `run_dir/daemon.log`.
    pub fn start_cluster(host: &Netns, run_dir: &Path, extra: &[&str]) -> Daemon {
        super::require_root();
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", host.path().display()))
            .arg(binary());
        Daemon::launch(command, host, run_dir.to_owned(), None, extra)
    }

    /// Runs `command` (which starts the binary inside `host`) as `daemon --threads 2 EXTRA`
    /// (`--threads` in EXTRA replaces the 2)
    /// with its run directory and log, and waits until it answers.
    fn launch(
        mut command: Command,
        host: &Netns,
        run_dir: PathBuf,
        owned_dir: Option<tempfile::TempDir>,
        extra: &[&str],
    ) -> Daemon {
        command.arg("daemon");
        // Two workers unless the caller says how many (clap refuses a flag given twice).
        if !extra.contains(&"--threads") {
            command.args(["--threads", "2"]);
        }
        command
            .args(extra)
            .env("VXTAP_RUN_DIR", &run_dir)
            .env("VXTAP_LOG", "debug");
        let log = run_dir.join("daemon.log");
        let mut process = DaemonProcess::spawn(host.name(), command, &binary(), &run_dir, &log)
            .unwrap_or_else(|e| panic!("{e}"));
        if let Err(e) = process.wait_ready(START_TIMEOUT, None) {
            panic!(
                "vxtap daemon in {}: {e}\nfull log:\n{}",
                host.name(),
                process.log()
            );
        }
        Daemon {
            process,
            _owned_dir: owned_dir,
            host: host.name().to_owned(),
        }
    }

    /// SIGKILL, as a crash would: nothing gets cleaned up.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Its run directory (`VXTAP_RUN_DIR`).
    pub fn run_dir(&self) -> &Path {
        self.process.run_dir()
    }

    /// Its admin socket.
    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("vxtap.sock")
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// CPU clock ticks (utime + stime, every thread, live and exited) it has used so far.
    ///
    /// # Panics
    ///
    /// If its `/proc` entry cannot be read (it is not running).
    pub fn cpu_ticks(&self) -> u64 {
        self.process
            .cpu_ticks()
            .unwrap_or_else(|e| panic!("{}: {e}", self.host))
    }

    /// The name of the host namespace it runs in.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// A `vxtap` command aimed at this daemon (run from the test's own namespace: the
    /// commands only talk to the admin socket).
    pub fn command(&self) -> Command {
        let mut command = Command::new(binary());
        command.env("VXTAP_RUN_DIR", self.run_dir());
        command
    }

    /// `vxtap ARGS...`, whatever the exit status.
    pub fn cli(&self, args: &[&str]) -> Output {
        cmd::output(self.command().args(args))
    }

    /// `vxtap ARGS...`, panicking (with the daemon's log) on failure; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let mut command = self.command();
        command.args(args);
        let out = cmd::output(&mut command);
        if !out.status.success() {
            panic!(
                "`{}` failed ({}): {}\ndaemon log:\n{}",
                cmd::describe(&command),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`cli`](Self::cli) with the arguments given as one whitespace-separated line.
    pub fn cli_line(&self, line: &str) -> Output {
        self.cli(&line.split_whitespace().collect::<Vec<_>>())
    }

    /// [`cli_ok`](Self::cli_ok) with the arguments given as one whitespace-separated line.
    pub fn cli_ok_line(&self, line: &str) -> String {
        self.cli_ok(&line.split_whitespace().collect::<Vec<_>>())
    }

    /// `vxtap ARGS... -j`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut full = args.to_vec();
        full.push("-j");
        let out = self.cli_ok(&full);
        serde_json::from_str(&out)
            .unwrap_or_else(|err| panic!("vxtap {}: not JSON ({err}): {out}", full.join(" ")))
    }

    /// `vxtap stats -j`: `{"links": [...], "global": {...}}`.
    pub fn stats(&self) -> Value {
        self.json(&["stats"])
    }

    /// `vxtap fdb show -j`: rows `{mac, dev, dst, vni, port, state, age}`.
    pub fn fdb(&self) -> Value {
        self.json(&["fdb", "show"])
    }

    /// `vxtap link show -j`.
    pub fn links(&self) -> Value {
        self.json(&["link", "show"])
    }

    /// `vxtap neigh show -j`.
    pub fn neigh(&self) -> Value {
        self.json(&["neigh", "show"])
    }

    /// Sends SIGTERM and waits (bounded) for the daemon to exit; SIGKILL if it does not.
    /// Returns how it exited, or `None` if it had to be killed (or was already reaped).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let running = self.process.pid().is_some() && self.process.exited().is_none();
        let status = self.process.terminate(STOP_TIMEOUT);
        if running && status.is_none() {
            eprintln!(
                "vxtap daemon in {} ignored SIGTERM for {STOP_TIMEOUT:?}; it was killed",
                self.host
            );
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- vxtap daemon log ({}) ---\n{}", self.host, self.log());
        }
        self.terminate();
    }
}

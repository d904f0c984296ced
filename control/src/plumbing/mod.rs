//! Namespace and link plumbing for overlay networks, the way Docker's overlay driver lays
//! it out: one namespace per network, bind-mounted under `RUN_DIR/netns/`, holding `br0`
//! (with the gateway address), the vxtap TAP, and one veth per local container whose other
//! end is the container's `ethN`.
//!
//! Links and addresses are set with iproute2 run inside the namespace through `nsenter`, so
//! the daemon's own threads never change namespace; namespaces are made and bound with
//! util-linux `unshare --net=FILE`. Every failure says
//! which command, in which namespace, and what the kernel answered.
//!
//! Nothing here waits on the outside world without a bound: a namespace path is opened and
//! checked (it must be a network namespace; a FIFO there cannot block) before any command
//! runs in it, and every command is killed after [`COMMAND_TIMEOUT`].

pub mod hosts;
pub mod netns;
pub mod overlay;
pub mod procs;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use vxtap_dataplane::io::netns::NetnsFile;
use vxtap_dataplane::io::IoError;

/// Longest an external command (`ip`, `unshare`) may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a plumbing step failed.
#[derive(Debug, thiserror::Error)]
pub enum PlumbingError {
    /// A command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command did not finish in time and was killed.
    #[error("`{command}` did not finish within {} s and was killed", after.as_secs())]
    TimedOut {
        /// The command line.
        command: String,
        /// How long it was given.
        after: Duration,
    },
    /// A command's exit could not be waited for.
    #[error("waiting for `{command}`: {source}")]
    Wait {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// The path is not a network namespace (or cannot be checked); nothing was run.
    #[error("{0}")]
    BadNetns(IoError),
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A command printed something unexpected.
    #[error("`{command}` printed something unexpected: {reason}")]
    Output {
        /// The command line.
        command: String,
        /// What was wrong.
        reason: String,
    },
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The namespace does not exist.
    #[error("network namespace {0} does not exist")]
    NoNetns(PathBuf),
    /// A namespace could not be created.
    #[error("creating network namespace {path}: {reason}")]
    Netns {
        /// Where.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No free interface name in the container.
    #[error("no free ethN name left in {0}")]
    NoIfname(PathBuf),
    /// The interface name asked for is taken in the container.
    #[error("{} already has an interface {ifname}", netns.display())]
    IfnameTaken {
        /// The container namespace.
        netns: PathBuf,
        /// The name.
        ifname: String,
    },
}

/// Writes `content` to `path` atomically with permissions `mode`, whatever the umask: a
/// temporary file beside it, then a rename, so a reader sees the old content or the new,
/// never a mix. The directory is created if missing (0755: readable, writable by its owner
/// alone).
///
/// # Errors
///
/// `Io` for the directory, the temporary file or the rename.
pub fn write_atomically(path: &Path, content: &[u8], mode: u32) -> Result<(), PlumbingError> {
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| PlumbingError::Io {
            action,
            path,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(io("creating", dir))?;
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.vxtap-tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    // The umask may have narrowed `mode` further at creation: set it exactly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(content))
        .map_err(io("writing", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("renaming into", path))
}

/// Checks that `path` is a network namespace, without blocking whatever it is.
///
/// # Errors
///
/// `NoNetns` if there is nothing there, `BadNetns` if it is something else or cannot be
/// checked.
pub fn check_netns(path: &Path) -> Result<NetnsFile, PlumbingError> {
    match vxtap_dataplane::io::netns::open(path) {
        Ok(file) => Ok(file),
        Err(IoError::NetnsNotFound { path }) => Err(PlumbingError::NoNetns(path)),
        Err(e) => Err(PlumbingError::BadNetns(e)),
    }
}

/// A path to the namespace `file` holds open (`/proc/PID/fd/N`), for commands this process
/// runs: they enter what was checked, whatever the original path names by then.
pub fn held_path(file: &NetnsFile) -> String {
    format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        file.as_fd().as_raw_fd()
    )
}

/// Runs `ip ARGS` inside the network namespace at `netns` and returns its stdout.
///
/// # Errors
///
/// `NoNetns` or `BadNetns` before anything runs, then `Spawn`, `TimedOut`, `Wait` or
/// `Command` (with ip's stderr).
pub fn ip(netns: &Path, args: &[&str]) -> Result<String, PlumbingError> {
    iproute2(netns, "ip", args)
}

/// Runs `bridge ARGS` inside the network namespace at `netns`, as [`ip`] runs `ip`.
///
/// # Errors
///
/// As for [`ip`].
pub fn bridge(netns: &Path, args: &[&str]) -> Result<String, PlumbingError> {
    iproute2(netns, "bridge", args)
}

/// Runs the `ip` commands `lines` (each a command's words, without `ip`) inside the network
/// namespace at `netns` with one `ip -batch`, in order, stopping at the first that fails:
/// one process instead of one per command. A word must not hold white space (names,
/// addresses and paths vxtap makes do not).
///
/// # Errors
///
/// As for [`ip`]; a failure names the batch's line that failed.
pub fn ip_batch(netns: &Path, lines: &[&[&str]]) -> Result<String, PlumbingError> {
    if let Some(word) = lines
        .iter()
        .flat_map(|l| l.iter())
        .find(|w| w.is_empty() || w.contains(char::is_whitespace))
    {
        return Err(PlumbingError::Command {
            command: format!("ip -batch (in {})", netns.display()),
            stderr: format!("the word {word:?} cannot go into a batch"),
        });
    }
    let input: String = lines.iter().map(|l| l.join(" ") + "\n").collect();
    iproute2_with(netns, "ip", &["-batch", "-"], Some(input.as_bytes()))
}

fn iproute2(netns: &Path, program: &str, args: &[&str]) -> Result<String, PlumbingError> {
    iproute2_with(netns, program, args, None)
}

fn iproute2_with(
    netns: &Path,
    program: &str,
    args: &[&str],
    input: Option<&[u8]>,
) -> Result<String, PlumbingError> {
    // nsenter enters the namespace we checked and hold open, through our own fd: a path
    // swapped after the check cannot send it anywhere else, or make it wait on a FIFO.
    let file = check_netns(netns)?;
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", held_path(&file)))
        .arg(program)
        .args(args);
    let mut line = format!("{program} {} (in {})", args.join(" "), netns.display());
    if let Some(input) = input {
        line = format!(
            "{line}: {}",
            String::from_utf8_lossy(input).trim().replace('\n', "; ")
        );
    }
    let output = run_with(&mut command, &line, COMMAND_TIMEOUT, input)?;
    drop(file);
    if !output.status.success() {
        return Err(PlumbingError::Command {
            command: line,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `command` (described as `line` in errors) with stdin closed and its output
/// collected; kills it if it has not finished within `limit`.
///
/// # Errors
///
/// `Spawn`, `TimedOut` (the child was killed and reaped), or `Wait`.
pub fn run(command: &mut Command, line: &str, limit: Duration) -> Result<Output, PlumbingError> {
    run_with(command, line, limit, None)
}

/// [`run`], with `input` (if any) written to the child's stdin, which is then closed.
fn run_with(
    command: &mut Command,
    line: &str,
    limit: Duration,
    input: Option<&[u8]>,
) -> Result<Output, PlumbingError> {
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| PlumbingError::Spawn {
            command: line.to_owned(),
            source,
        })?;
    // Drain both pipes while waiting, so a chatty child cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::Builder::new()
            .name("vxtap-command".into())
            .spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    pipe.read_to_end(&mut bytes)?;
                }
                Ok::<_, std::io::Error>(bytes)
            })
    };
    let spawn_error = |source| PlumbingError::Spawn {
        command: line.to_owned(),
        source,
    };
    let wait_error = |source| PlumbingError::Wait {
        command: line.to_owned(),
        source,
    };
    let stdout = child
        .stdout
        .take()
        .map(|p| Box::new(p) as Box<dyn Read + Send>);
    let stderr = child
        .stderr
        .take()
        .map(|p| Box::new(p) as Box<dyn Read + Send>);
    let (stdout, stderr) = match (drain(stdout), drain(stderr)) {
        (Ok(out), Ok(err)) => (out, err),
        (Err(e), _) | (_, Err(e)) => {
            kill(&mut child, line);
            return Err(spawn_error(e));
        }
    };
    if let (Some(input), Some(mut pipe)) = (input, child.stdin.take()) {
        // A batch is a few hundred bytes, well under a pipe's buffer: this does not block
        // on a child that reads nothing. Closing the pipe ends the batch.
        if let Err(e) = pipe.write_all(input) {
            kill(&mut child, line);
            return Err(spawn_error(e));
        }
    }
    let deadline = Instant::now() + limit;
    // Polled from 0.2 ms, doubling up to 5 ms: a command is seen done within about 5 ms
    // of its end (plumbing a container runs several in a row).
    let mut pause = Duration::from_micros(200);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                kill(&mut child, line);
                return Err(wait_error(e));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            kill(&mut child, line);
            // The readers end when the pipes close; a grandchild holding them would keep
            // them open, so they are left to finish on their own.
            return Err(PlumbingError::TimedOut {
                command: line.to_owned(),
                after: limit,
            });
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(5));
    };
    let collect = |reader: std::thread::JoinHandle<std::io::Result<Vec<u8>>>| {
        reader
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the reader thread panicked")))
            .map_err(wait_error)
    };
    Ok(Output {
        status,
        stdout: collect(stdout)?,
        stderr: collect(stderr)?,
    })
}

/// Kills and reaps a child that is given up on; failures are logged (it may have exited).
fn kill(child: &mut std::process::Child, line: &str) {
    if let Err(e) = child.kill() {
        tracing::warn!(command = line, error = %e, "killing a command");
    }
    if let Err(e) = child.wait() {
        tracing::warn!(command = line, error = %e, "reaping a killed command");
    }
}

/// Interface names in the namespace at `netns`.
///
/// # Errors
///
/// As for [`ip`], or `Output` if `ip -j` printed something that is not a link list.
pub fn interfaces(netns: &Path) -> Result<Vec<String>, PlumbingError> {
    let json = ip(netns, &["-j", "link", "show"])?;
    parse_link_names(&json).map_err(|reason| PlumbingError::Output {
        command: format!("ip -j link show (in {})", netns.display()),
        reason,
    })
}

fn parse_link_names(json: &str) -> Result<Vec<String>, String> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let links = value.as_array().ok_or("not a JSON array")?;
    links
        .iter()
        .map(|l| {
            l["ifname"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| "a link without ifname".to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Input reaches the child's stdin, which is then closed (or `cat` would never end).
    #[test]
    fn input_is_written_and_closed() {
        let out = run_with(
            &mut Command::new("cat"),
            "cat",
            Duration::from_secs(5),
            Some(b"link set lo up\n"),
        )
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"link set lo up\n");
    }

    /// A word with white space would split into two in a batch: refused before anything runs.
    #[test]
    fn batches_refuse_words_that_would_split() {
        for bad in ["a b", "x\ny", ""] {
            let err =
                ip_batch(Path::new("/nonexistent"), &[&["link", "set", bad, "up"]]).unwrap_err();
            assert!(err.to_string().contains("cannot go into a batch"), "{err}");
        }
    }

    /// The modes are what the caller asks, whatever the umask: under umask 000 a hosts file
    /// or the endpoint record must not become writable by everyone.
    #[test]
    fn atomic_writes_ignore_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("new").join("endpoints.json");
        let hosts = dir.path().join("hosts");
        let old = rustix::process::umask(rustix::fs::Mode::empty());
        let written = write_atomically(&record, b"[]", 0o600)
            .and_then(|()| write_atomically(&hosts, b"x", 0o644));
        rustix::process::umask(old);
        written.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&record), 0o600);
        assert_eq!(mode(record.parent().unwrap()), 0o755);
        assert_eq!(mode(&hosts), 0o644);
        // Replacing keeps the mode asked for, not the old file's.
        write_atomically(&hosts, b"y", 0o600).unwrap();
        assert_eq!(mode(&hosts), 0o600);
        assert_eq!(std::fs::read(&hosts).unwrap(), b"y");
    }

    #[test]
    fn a_command_that_hangs_is_killed() {
        let mut sleeper = Command::new("sleep");
        sleeper.arg("30");
        let err = run(&mut sleeper, "sleep 30", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, PlumbingError::TimedOut { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "`sleep 30` did not finish within 0 s and was killed"
        );
        // Output and status of a command that finishes come back whole.
        let mut echo = Command::new("sh");
        echo.args(["-c", "echo out; echo err >&2; exit 3"]);
        let output = run(&mut echo, "sh", COMMAND_TIMEOUT).unwrap();
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.stderr, b"err\n");
        assert_eq!(output.status.code(), Some(3));
    }

    #[test]
    fn nothing_runs_in_a_path_that_is_not_a_netns() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        // nsenter would wait forever for a writer to open the FIFO.
        let err = ip(&fifo, &["link", "show"]).unwrap_err();
        assert!(matches!(err, PlumbingError::BadNetns(_)), "{err:?}");
        assert!(
            err.to_string().contains("is not a network namespace"),
            "{err}"
        );
        let err = ip(Path::new("/proc/self/ns/mnt"), &["link", "show"]).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("is not a network namespace (a mount namespace)"),
            "{err}"
        );
        let missing = dir.path().join("missing");
        assert!(matches!(
            ip(&missing, &["link", "show"]),
            Err(PlumbingError::NoNetns(p)) if p == missing
        ));
    }

    #[test]
    fn link_names_come_from_ip_json() {
        let json = r#"[{"ifindex":1,"ifname":"lo"},{"ifindex":5,"ifname":"eth0","link_index":6}]"#;
        assert_eq!(parse_link_names(json).unwrap(), ["lo", "eth0"]);
        assert!(parse_link_names("{}").is_err());
        assert!(parse_link_names(r#"[{"ifindex":1}]"#).is_err());
        assert!(parse_link_names("garbage").is_err());
    }
}

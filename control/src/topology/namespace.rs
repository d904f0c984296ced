//! [`Namespace`]: a named network namespace (`ip netns add`) that exists for the lifetime of
//! its guard. It starts with IPv6 off (no neighbour discovery or MLD reports to disturb
//! captures, counters and benchmarks) and `lo` up. Dropping it kills every process left
//! inside, removes its `/etc/netns` entry and deletes it, during a panic too. It never
//! touches the root namespace.
//!
//! A process killed outright (SIGKILL, or a test binary ended by a time-out's SIGTERM) runs
//! no `Drop`. So each namespace is recorded with its owner (pid and start time) under
//! [`OWNERS_DIR`], and the first namespace a process creates first deletes every recorded
//! namespace whose owner is gone.

use super::TopologyError;
use crate::plumbing::{self, PlumbingError, COMMAND_TIMEOUT};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vxtap_dataplane::io::netns::NETNS_RUN_DIR;

/// Serialises `ip netns add/del`: the first `add` of a boot sets up the shared
/// `/var/run/netns` mount, and concurrent first runs would stack mounts.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// Where `ip netns exec` finds per-namespace files such as `hosts`.
const ETC_NETNS: &str = "/etc/netns";

/// Who created each namespace: a file per namespace, `PID START_TIME` (root's, on tmpfs).
pub const OWNERS_DIR: &str = "/run/vxtap-namespaces";

/// The orphans are reaped once per process, before its first namespace.
static REAPED: std::sync::Once = std::sync::Once::new();

/// How long the processes left in a namespace get to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// A network namespace that exists for the lifetime of the guard.
#[derive(Debug)]
pub struct Namespace {
    name: String,
    path: PathBuf,
    /// Deleted already (by [`delete`](Self::delete)): nothing left for `Drop`.
    deleted: bool,
}

impl Namespace {
    /// Creates namespace `name` with IPv6 off and `lo` up.
    ///
    /// # Errors
    ///
    /// `NamespaceExists` if the name is taken, `Plumbing` if `ip netns add` or `ip link`
    /// fails, `Enter` / `InNamespace` for the IPv6 switch. Whatever was created is deleted
    /// again before the error returns.
    pub fn create(name: &str) -> Result<Namespace, TopologyError> {
        let path = Path::new(NETNS_RUN_DIR).join(name);
        if path.exists() {
            return Err(TopologyError::NamespaceExists {
                name: name.to_owned(),
            });
        }
        REAPED.call_once(Namespace::reap_orphans);
        {
            let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run_ip_netns(&["netns", "add", name])?;
        }
        // From here on, Drop deletes it even if the rest of the setup fails.
        let namespace = Namespace {
            name: name.to_owned(),
            path,
            deleted: false,
        };
        record_owner(name)?;
        if Path::new("/proc/sys/net/ipv6").exists() {
            for knob in ["all", "default"] {
                // /proc/sys/net shows the namespace of the thread that opens it.
                let file = format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6");
                namespace
                    .enter(|| std::fs::write(&file, "1"))?
                    .map_err(|source| TopologyError::InNamespace {
                        what: format!("writing {file}"),
                        name: name.to_owned(),
                        source,
                    })?;
            }
        }
        namespace.run_ip(&["link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    /// Deletes every recorded namespace whose owner is gone (killed before its guards ran),
    /// with what was left running inside it. Runs by itself before a process's first
    /// namespace.
    pub fn reap_orphans() {
        let Ok(records) = std::fs::read_dir(OWNERS_DIR) else {
            return;
        };
        for record in records.flatten() {
            let name = record.file_name().to_string_lossy().into_owned();
            let owner = std::fs::read_to_string(record.path()).unwrap_or_default();
            if owner_alive(&owner) {
                continue;
            }
            let path = Path::new(NETNS_RUN_DIR).join(&name);
            if path.exists() {
                eprintln!(
                    "cleanup: deleting namespace {name}, left by process {owner:?} which is gone"
                );
            }
            // Its guard's Drop, run now: kills what is inside, deletes it and the record.
            drop(Namespace {
                name,
                path,
                deleted: false,
            });
            let _ = std::fs::remove_file(record.path());
        }
    }

    /// The name `ip netns` knows it by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its file under `/var/run/netns`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `ip ARGS...` inside the namespace; returns stdout.
    ///
    /// # Errors
    ///
    /// `Plumbing`, naming the command, the namespace and ip's stderr.
    pub fn run_ip<S: AsRef<str>>(&self, args: &[S]) -> Result<String, TopologyError> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        Ok(plumbing::ip(&self.path, &args)?)
    }

    /// `bridge ARGS...` inside the namespace; returns stdout.
    ///
    /// # Errors
    ///
    /// As for [`run_ip`](Self::run_ip).
    pub fn run_bridge<S: AsRef<str>>(&self, args: &[S]) -> Result<String, TopologyError> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        Ok(plumbing::bridge(&self.path, &args)?)
    }

    /// A `Command` that runs `program` inside the namespace (`ip netns exec NAME program`,
    /// which also applies `/etc/netns/NAME`). The program replaces `ip`, so the child's pid
    /// is the program's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `f` on a helper thread inside the namespace (sockets it opens stay there).
    ///
    /// # Errors
    ///
    /// `Enter` if the namespace cannot be entered.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, TopologyError> {
        vxtap_dataplane::io::netns::run_in(&self.path, f).map_err(|source| TopologyError::Enter {
            name: self.name.clone(),
            source,
        })
    }

    /// Pids of the processes inside the namespace (`ip netns pids`), this one excepted.
    pub fn pids(&self) -> Vec<u32> {
        let mut command = Command::new("ip");
        command.args(["netns", "pids", &self.name]);
        let line = format!("ip netns pids {}", self.name);
        match plumbing::run(&mut command, &line, COMMAND_TIMEOUT) {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .filter(|&p| p != std::process::id())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Kills what is left inside, removes `/etc/netns/NAME` and deletes the namespace.
    ///
    /// # Errors
    ///
    /// `Plumbing` if `ip netns del` fails, `Io` for the `/etc/netns` entry.
    pub fn delete(mut self) -> Result<(), TopologyError> {
        self.remove()
    }

    fn remove(&mut self) -> Result<(), TopologyError> {
        if std::mem::replace(&mut self.deleted, true) || !self.path.exists() {
            return Ok(());
        }
        // Processes left behind (an iperf3 server, a leaked daemon): all started inside
        // this namespace, which carries this run's own name.
        let pids = self.pids();
        for &pid in &pids {
            if let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                // ESRCH: it exited just now.
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        let deadline = Instant::now() + KILL_WAIT;
        while !pids.is_empty() && !self.pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let etc = Path::new(ETC_NETNS).join(&self.name);
        let etc_result = if etc.exists() {
            std::fs::remove_dir_all(&etc).map_err(TopologyError::io("removing", &etc))
        } else {
            Ok(())
        };
        {
            let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run_ip_netns(&["netns", "del", &self.name])?;
        }
        // Gone already if the namespace was never recorded.
        let _ = std::fs::remove_file(Path::new(OWNERS_DIR).join(&self.name));
        etc_result
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            // Never panic in drop (it may run during a panic); say why cleanup failed.
            eprintln!("cleanup: {e}");
        }
    }
}

/// This process as an owner record: its pid and start time (so a reused pid is not taken
/// for it).
fn owner_of(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the command name (which may hold spaces and parentheses).
    let start = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .nth(19)?;
    Some(format!("{pid} {start}"))
}

/// Records this process as the owner of namespace `name`.
fn record_owner(name: &str) -> Result<(), TopologyError> {
    let dir = Path::new(OWNERS_DIR);
    let record = dir.join(name);
    let owner = owner_of(std::process::id()).unwrap_or_default();
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&record, owner))
        .map_err(TopologyError::io("recording the owner in", &record))
}

/// Whether owner record `record` names a process still running.
fn owner_alive(record: &str) -> bool {
    let Some(pid) = record
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
    else {
        return false;
    };
    owner_of(pid).is_some_and(|now| now == record.trim())
}

/// `ip netns ...` in the caller's namespace (only `netns add/del/pids`, which touch nothing
/// but the named namespace).
fn run_ip_netns(args: &[&str]) -> Result<(), TopologyError> {
    let mut command = Command::new("ip");
    command.args(args);
    let line = format!("ip {}", args.join(" "));
    let out = plumbing::run(&mut command, &line, COMMAND_TIMEOUT)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PlumbingError::Command {
            command: line,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_this_process_until_it_is_gone() {
        let me = owner_of(std::process::id()).expect("our own stat");
        assert!(me.starts_with(&format!("{} ", std::process::id())), "{me}");
        assert!(owner_alive(&me));
        // The same pid started at another time is someone else.
        let pid = std::process::id();
        assert!(!owner_alive(&format!("{pid} 1")));
        assert!(!owner_alive(""));
        assert!(!owner_alive("junk"));
        // A process that has exited.
        let mut child = Command::new("true").spawn().expect("true");
        let gone = child.id();
        child.wait().expect("wait");
        let record = format!("{gone} 12345");
        assert!(!owner_alive(&record));
    }
}

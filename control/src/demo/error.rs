//! Why a demo step failed, with what it was working on: the command line and its stderr, the
//! path, the namespace. Every message fits on the line after `vxtap demo: `.

use std::path::PathBuf;

/// A failed demo step.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Something the demo needs is missing; `hint` says how to get it.
    #[error("{what}: {hint}")]
    Prerequisite {
        /// What is missing.
        what: String,
        /// How to fix it.
        hint: &'static str,
    },
    /// A program could not be started at all.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The last lines of its stderr (or stdout when stderr was empty).
        stderr: String,
    },
    /// A program did not finish in time and was killed.
    #[error("`{command}` did not finish within {seconds} s and was killed")]
    Timeout {
        /// The command line.
        command: String,
        /// The limit.
        seconds: u64,
    },
    /// SIGINT or SIGTERM arrived; the demo stops and cleans up.
    #[error("interrupted")]
    Interrupted,
    /// A file or directory operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done (`creating`, `reading`, ...).
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A namespace left over from an earlier run has the name this run wants.
    #[error("network namespace {name} already exists (left over from an earlier demo? remove it with `ip netns del {name}`)")]
    NamespaceExists {
        /// The namespace name.
        name: String,
    },
    /// A daemon did not open its admin socket in time, or exited early.
    #[error("the vxtap daemon of {host} {problem}; last lines of {}:\n{tail}", log.display())]
    DaemonStart {
        /// The host label.
        host: String,
        /// `exited with ...` or `did not open ... within N s`.
        problem: String,
        /// The daemon's log file.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// A daemon did not stop cleanly.
    #[error("the vxtap daemon of {host} (pid {pid}): {problem}")]
    DaemonStop {
        /// The host label.
        host: String,
        /// Its pid.
        pid: u32,
        /// What happened.
        problem: String,
    },
    /// A Docker engine did not answer in time, or exited early.
    #[error("the Docker engine of {host} {problem}; last lines of {}:\n{tail}", log.display())]
    EngineStart {
        /// The host label.
        host: String,
        /// `exited with ...` or `did not answer ... within N s`.
        problem: String,
        /// dockerd's log file.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// A Docker engine did not stop cleanly.
    #[error("the Docker engine of {host}: {problem}")]
    EngineStop {
        /// The host label.
        host: String,
        /// What went wrong.
        problem: String,
    },
    /// Entering a namespace to open a socket failed.
    #[error("in network namespace {netns}: {source}")]
    Netns {
        /// The namespace name.
        netns: String,
        /// Why.
        source: vxtap_dataplane::io::IoError,
    },
    /// `vxtap network inspect` printed something that is not the expected JSON.
    /// A step of the shared topology builder failed.
    #[error(transparent)]
    Topology(crate::topology::TopologyError),
    #[error("`vxtap network inspect {network}` printed unexpected output ({reason}): {output}")]
    Inspect {
        /// The network name.
        network: String,
        /// What was wrong.
        reason: String,
        /// The output, shortened.
        output: String,
    },
    /// Something the demo waits for did not happen in time.
    #[error("gave up after {seconds} s waiting for {what}")]
    Wait {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
    /// Pings between the containers did not get through.
    #[error("ping from {from} to {target} failed: {detail}")]
    Ping {
        /// The source container.
        from: String,
        /// What was pinged (an IP or a name).
        target: String,
        /// Ping's own summary or error.
        detail: String,
    },
    /// The TCP throughput measurement failed.
    #[error("throughput from {from} to {to} failed: {detail}")]
    Throughput {
        /// The sending container.
        from: String,
        /// The receiving container.
        to: String,
        /// What went wrong.
        detail: String,
    },
}

impl From<crate::topology::TopologyError> for DemoError {
    fn from(e: crate::topology::TopologyError) -> Self {
        use crate::topology::TopologyError as T;
        match e {
            T::Interrupted => DemoError::Interrupted,
            T::NamespaceExists { name } => DemoError::NamespaceExists { name },
            T::DaemonStart {
                host,
                problem,
                log,
                tail,
            } => DemoError::DaemonStart {
                host,
                problem,
                log,
                tail,
            },
            T::DaemonStop { host, pid, problem } => DemoError::DaemonStop { host, pid, problem },
            other => DemoError::Topology(other),
        }
    }
}

impl DemoError {
    /// An I/O error on `path` while doing `action`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

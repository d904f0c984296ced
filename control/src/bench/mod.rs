//! `vxtap bench`: vxtap next to the kernel's vxlan device on one machine, in one run. Each
//! configuration (kernel, vxtap, vxtap-off, vxtap-kernel, vxtap-nofilter, vxtap-busypoll)
//! gets a topology built from scratch by the shared [`crate::topology`] builder, as Docker
//! lays out an overlay; it is measured (TCP 1 and 4 streams, UDP rate under 1% loss, ping p50/p99, CPU
//! per GB, TCP under a flood from an unknown host) and torn down. Runs rotate the order.
//! Progress goes to stderr; the table (or JSON) to stdout; a chart of the ratios to the
//! kernel to an SVG file if asked.
//!
//! - `args`: flags, configurations, validation;
//! - `measure`: the topology of one configuration and its measurements;
//! - `stats`: medians, spreads, percentiles, the UDP bisection (pure);
//! - `report`, `svg`: the table, the JSON, the chart (pure);
//! - `machine`: the header's facts, read only (halt polling included);
//! - `flood`: the unknown host's sender (`vxtap bench-flood`, hidden);
//! - `control`: the control plane at scale (`vxtap bench-control`, hidden; `benches/control.sh`).
//!
//! It needs root (namespaces) and never changes the machine's settings: no sysctl or module
//! parameter is written, nothing is added to the root namespace, and everything it made is
//! removed on the way out, on error and on Ctrl-C too.

mod args;
pub mod control;
mod flood;
mod machine;
mod measure;
mod report;
mod stats;
mod svg;

pub use args::{rotation, BenchArgs, Config, FloodMode, Settings};
pub use control::ControlArgs;
pub use flood::{FloodArgs, FloodOutcome};
pub use report::{Header, Report, Results, METRICS};
pub use stats::{median, percentile, spread, Probe, UdpSearch};

use crate::topology::programs::missing_programs;
use crate::topology::TopologyError;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Programs the benchmark runs, with the Debian package of each.
const PROGRAMS: [(&str, &str); 6] = [
    ("ip", "iproute2"),
    ("bridge", "iproute2"),
    ("ss", "iproute2"),
    ("nsenter", "util-linux"),
    ("ping", "iputils-ping"),
    ("iperf3", "iperf3"),
];

/// Why the benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag has a value that cannot work.
    #[error("{flag} {why}")]
    BadArgument {
        /// The flag.
        flag: String,
        /// Why not.
        why: String,
    },
    /// `--configs` names a configuration that does not exist.
    #[error("unknown configuration '{name}' (known: {known})")]
    UnknownConfig {
        /// The name given.
        name: String,
        /// The known ones.
        known: String,
    },
    /// Not running as root.
    #[error(
        "needs root: it creates network namespaces, veth links and TAPs (running as uid {uid})"
    )]
    NotRoot {
        /// The effective uid.
        uid: u32,
    },
    /// vxtap configurations need TAPs.
    #[error("/dev/net/tun is missing: the vxtap configurations need TAP devices")]
    NoTun,
    /// Programs it runs are missing.
    #[error("missing programs: {0}")]
    MissingPrograms(String),
    /// This binary's own path (the daemons and the flood sender run it).
    #[error("finding the vxtap binary: {0}")]
    Exe(std::io::Error),
    /// Building or tearing down a configuration's topology failed.
    #[error("{config}: {source}")]
    Topology {
        /// The configuration.
        config: &'static str,
        /// What failed.
        source: TopologyError,
    },
    /// A measurement step failed.
    #[error("{config}: {what}: {detail}")]
    Step {
        /// The configuration.
        config: &'static str,
        /// The step.
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// The flood sender's sockets.
    #[error("making the flood sockets: {0}")]
    Flood(std::io::Error),
    /// A file could not be written or made.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Interrupted (SIGINT, SIGTERM); everything was cleaned up.
    #[error("interrupted")]
    Interrupted,
}

/// Runs the benchmark as `args` say, printing the table or JSON to stdout.
///
/// # Errors
///
/// Bad flags, missing privileges or programs, a failed step, or an interrupt; everything
/// built is removed before the error returns.
pub fn run(args: &BenchArgs, command_line: &str) -> Result<(), BenchError> {
    let settings = args.settings()?;
    let uid = rustix::process::geteuid();
    if !uid.is_root() {
        return Err(BenchError::NotRoot { uid: uid.as_raw() });
    }
    if settings.configs.iter().any(|&c| c != Config::Kernel)
        && !std::path::Path::new("/dev/net/tun").exists()
    {
        return Err(BenchError::NoTun);
    }
    let missing = missing_programs(&PROGRAMS);
    if !missing.is_empty() {
        return Err(BenchError::MissingPrograms(missing.join(", ")));
    }
    let exe = std::env::current_exe().map_err(BenchError::Exe)?;
    let interrupt = Arc::new(AtomicBool::new(false));
    let mut handlers = Vec::new();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Ok(id) = signal_hook::flag::register(signal, Arc::clone(&interrupt)) {
            handlers.push(id);
        }
    }
    let header = Header {
        command: command_line.to_owned(),
        date: machine::utc_now(),
        kernel: machine::kernel_release(),
        cpus: machine::cpus(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        commit: args.commit.clone().filter(|c| !c.is_empty()),
        halt_poll: machine::halt_poll(),
        load: (machine::load_average(), String::new()),
        elapsed_seconds: 0,
    };
    let mut bench = measure::Bench::new(&settings, exe, &interrupt);
    let outcome = (|| {
        for run in 1..=settings.runs {
            let order = rotation(&settings.configs, run);
            let names: Vec<&str> = order.iter().map(|c| c.name()).collect();
            bench.log(&format!(
                "run {run}/{}, order: {}",
                settings.runs,
                names.join(" ")
            ));
            for config in order {
                bench.measure(run, config)?;
            }
        }
        Ok(())
    })();
    for id in handlers {
        signal_hook::low_level::unregister(id);
    }
    if interrupt.load(std::sync::atomic::Ordering::SeqCst) {
        bench.log("interrupted; everything it built was removed");
        return Err(BenchError::Interrupted);
    }
    outcome?;
    let elapsed = bench.elapsed_seconds();
    bench.log(&format!("done in {elapsed} s"));
    let report = Report {
        header: Header {
            load: (header.load.0.clone(), machine::load_average()),
            elapsed_seconds: elapsed,
            ..header
        },
        settings: settings.clone(),
        results: bench.results.clone(),
    };
    // The measurements first: a chart that cannot be written must not cost them.
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.json()).unwrap_or_default()
        );
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, svg::chart(&report)).map_err(|source| BenchError::Io {
            action: "writing",
            path: path.clone(),
            source,
        })?;
        bench.log(&format!("chart written to {}", path.display()));
    }
    Ok(())
}

/// `vxtap bench-flood`: floods as `args` say and prints what it sent.
///
/// # Errors
///
/// Bad arguments, or the sockets cannot be made.
pub fn run_flood(args: &FloodArgs) -> Result<(), BenchError> {
    let outcome = flood::run(args)?;
    println!("{}", outcome.line());
    Ok(())
}

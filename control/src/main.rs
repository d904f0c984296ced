//! The `vxtap` command: the daemon, and the iproute2-shaped commands that talk to it.

mod api;
mod cli;
mod client;
mod daemon;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// vxtap: a userspace VXLAN data plane for container overlay networks.
///
/// It replaces the kernel vxlan device with a TAP in the overlay namespace and a
/// multithreaded userspace switch that speaks VXLAN (RFC 7348) on UDP 4789.
#[derive(Debug, Parser)]
#[command(name = "vxtap", version, about, long_about)]
struct Cli {
    /// Directory of the daemon's admin socket (vxtap.sock).
    #[arg(
        long,
        global = true,
        env = "VXTAP_RUN_DIR",
        default_value = "/run/vxtap"
    )]
    run_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the data plane in this network namespace.
    Daemon {
        /// Underlay UDP port to listen on.
        #[arg(long, default_value_t = 4789)]
        port: u16,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Links: `add NAME id VNI [local IP] [dstport PORT] [netns NS] [proxy] [learning|nolearning]
    /// [ageing SECS] [maxaddress N] [mtu N] [admit any|known]`, `del NAME`, `show [NAME] [-j]`.
    #[command(allow_hyphen_values = true, disable_help_flag = true)]
    Link {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Forwarding table: `add|append|replace|del MAC dev NAME dst IP [vni N] [port P]`,
    /// `show [dev NAME] [-j]`. MAC 00:00:00:00:00:00 with append builds the flood list.
    #[command(allow_hyphen_values = true, disable_help_flag = true)]
    Fdb {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// ARP proxy table: `add|del IP lladdr MAC dev NAME`, `show [dev NAME] [-j]`.
    #[command(allow_hyphen_values = true, disable_help_flag = true)]
    Neigh {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Counters per link: frames and bytes each way, drops by reason, learning, floods, misses.
    Stats {
        /// Print JSON.
        #[arg(short = 'j', long = "json")]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Daemon { port, threads } => {
            init_logging();
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let options = daemon::Options {
                run_dir: cli.run_dir,
                port,
                threads,
            };
            return match daemon::run(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("vxtap daemon: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Link { args } => cli::args::link(&args),
        Command::Fdb { args } => cli::args::fdb(&args),
        Command::Neigh { args } => cli::args::neigh(&args),
        Command::Stats { json } => Ok(cli::args::Command {
            request: api::Request::Stats,
            json,
        }),
    };
    let command = match command {
        Ok(command) => command,
        Err(e) => {
            eprintln!("vxtap: {e}");
            return ExitCode::from(2);
        }
    };
    match client::call(&cli.run_dir, &command.request) {
        Ok(reply) => {
            print!("{}", cli::output::render(&reply, command.json));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vxtap: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VXTAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

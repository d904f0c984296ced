//! The `vxtap` command: the daemon, and the iproute2-shaped commands that talk to it.

use vxtap::{api, bench, cli, client, daemon, demo, sim};

use clap::{Parser, Subcommand};
use std::net::Ipv4Addr;
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

/// `vxtap daemon`'s flags.
#[derive(Debug, clap::Args)]
struct DaemonArgs {
    /// Underlay UDP port to listen on.
    #[arg(long, default_value_t = 4789)]
    pub port: u16,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The underlay filter: an eBPF program on the underlay sockets that drops datagrams
    /// that are plainly not ours (not VXLAN, unknown VNI or VTEP, reserved bits) in the
    /// kernel. `off` checks every datagram in userspace only; with `on`, a kernel that
    /// refuses it is logged and the daemon runs as with `off`.
    #[arg(
        long,
        value_name = "on|off",
        env = "VXTAP_UNDERLAY_FILTER",
        default_value = "on",
        value_parser = parse_on_off,
        action = clap::ArgAction::Set
    )]
    pub underlay_filter: bool,
    /// Microseconds a worker keeps polling its TAP queues and socket after traffic before
    /// it sleeps (0: sleep at once). Saves the wake-up of the next frame of a conversation
    /// (tens of microseconds across vCPUs on a VM) for that much CPU after traffic; never
    /// spins while idle. At most 10000.
    #[arg(
        long,
        value_name = "USEC",
        env = "VXTAP_BUSY_POLL",
        default_value_t = 0,
        value_parser = clap::value_parser!(u64).range(0..=10_000)
    )]
    pub busy_poll: u64,
    /// This host's VTEP address: turns on the control plane (overlay networks from the
    /// store). Without it the daemon only serves `link`, `fdb` and `neigh`.
    #[arg(long, value_name = "IP")]
    pub local_ip: Option<Ipv4Addr>,
    /// This host's name in the store (default: the system host name).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// The cluster store: dir:PATH (one machine), etcd://HOST:PORT[,HOST:PORT...], or
    /// etcds://HOST:PORT[,HOST:PORT...] for etcd over TLS.
    #[arg(
        long,
        value_name = "URL",
        env = "VXTAP_STORE",
        default_value = "dir:/var/lib/vxtap/store"
    )]
    pub store: String,
    /// Let members of this group (a name or a gid) use the admin socket like root: the
    /// socket is then mode 0660 with this group instead of 0600 (root only).
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// etcds://: PEM CA bundle that etcd's server certificate must chain to (required;
    /// the system's roots are not used).
    #[arg(long, value_name = "FILE")]
    pub store_ca: Option<PathBuf>,
    /// etcds://: PEM client certificate for etcd's --client-cert-auth (with --store-key).
    #[arg(long, value_name = "FILE", requires = "store_key")]
    pub store_cert: Option<PathBuf>,
    /// etcds://: PEM private key of --store-cert.
    #[arg(long, value_name = "FILE", requires = "store_cert")]
    pub store_key: Option<PathBuf>,
    /// etcds://: etcd user to authenticate as; its password comes from
    /// --store-password-file or the environment variable VXTAP_STORE_PASSWORD (never
    /// from the command line).
    #[arg(long, value_name = "NAME")]
    pub store_user: Option<String>,
    /// File holding the --store-user password (one trailing newline is dropped).
    #[arg(long, value_name = "FILE")]
    pub store_password_file: Option<PathBuf>,
    /// Serve Docker's remote network and IPAM drivers as `vxtap` (needs --local-ip):
    /// `docker network create -d vxtap --ipam-driver vxtap NAME`. Every vxtap network
    /// then shows up in the local engine, and containers' names resolve across hosts.
    #[arg(long, requires = "local_ip")]
    pub docker: bool,
    /// --docker: where Docker looks for plugin sockets; vxtap.sock goes there.
    #[arg(long, value_name = "DIR", default_value = vxtap::docker::DEFAULT_PLUGIN_DIR)]
    pub docker_plugin_dir: PathBuf,
    /// --docker: the local Docker engine's API socket.
    #[arg(long, value_name = "URL", default_value = vxtap::docker::DEFAULT_ENGINE)]
    pub docker_host: String,
    /// Serve names in every overlay namespace at 169.254.53.53 (endpoint names across hosts;
    /// CNI results list it). --docker turns it on too.
    #[arg(long, requires = "local_ip")]
    pub dns: bool,
    /// --dns, --docker: DNS servers the resolver forwards names it does not own to, IP or
    /// IP:PORT, repeatable (default: the nameservers of /etc/resolv.conf).
    #[arg(long, value_name = "ADDR")]
    pub dns_upstream: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the data plane in this network namespace.
    Daemon(Box<DaemonArgs>),
    /// Overlay networks, shared by every host on the store: create, ls, inspect, rm.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// Hosts taking part in the overlays: `host ls [-j]`. On etcd a host is listed while its
    /// daemon's lease lives; on a dir store, until it is removed.
    Host {
        #[command(subcommand)]
        command: HostCommand,
    },
    /// CNI: `cni config NETWORK` prints a conflist for /etc/cni/net.d/. (As a CNI plugin,
    /// install this binary as /opt/cni/bin/vxtap: runtimes call it with CNI_COMMAND set.)
    Cni {
        #[command(subcommand)]
        command: CniCommand,
    },
    /// Connect a container (a network namespace) to a network: a veth on the overlay's br0,
    /// `ethN` in the container with an IP from the network, published to every host.
    Connect {
        /// Network name or id.
        network: String,
        /// Container network namespace: a name (as `ip netns` lists) or a path.
        netns: String,
        /// IP address (default: the next free one).
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// Endpoint name, resolvable from the network's containers (default: the netns name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Disconnect a container from a network, on every host.
    Disconnect {
        /// Network name or id.
        network: String,
        /// Container network namespace.
        netns: String,
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
    /// Two hosts as network namespaces, an overlay network between them, a container on
    /// each: ping across, measure throughput, show the tables, clean up (also on Ctrl-C).
    /// `vxtap demo docker`: the same hosts with a Docker engine each, vxtap as Docker's
    /// network and IPAM driver, and the `docker` CLI (needs docker.io and busybox-static).
    Demo {
        /// `docker`: `docker network create -d vxtap`, `docker run` on each host, `docker
        /// exec ... ping` by name across hosts, with a private dockerd per host.
        #[arg(value_enum)]
        variant: Option<DemoVariant>,
        /// Seconds of throughput measurement (default 5; not in the Docker demo).
        #[arg(long)]
        duration: Option<u64>,
        /// Leave the hosts, daemons and containers running at the end.
        #[arg(long)]
        keep: bool,
    },
    /// The overlay benchmark: vxtap next to the kernel's vxlan device on two hosts made of
    /// network namespaces, rebuilt per configuration and run: TCP 1 and 4 streams, UDP rate
    /// under 1% loss, ping p50/p99, CPU per GB, TCP under a flood from an unknown host.
    /// Prints medians with the per-run spread and ratios to the kernel (needs root, iperf3).
    Bench(Box<bench::BenchArgs>),
    /// The control-plane benchmark (benches/control.sh): simulated hosts in a real etcd and
    /// real daemons; new-endpoint latency, store reads and etcd CPU per change, connects,
    /// dead-host purge. Prints a markdown table (needs root and etcd-server).
    #[command(hide = true)]
    BenchControl(Box<bench::ControlArgs>),
    /// The benchmark's flood sender (run inside the unknown host's namespace).
    #[command(hide = true)]
    BenchFlood(bench::FloodArgs),
    /// Simulated hosts for scale tests: writes N hosts with E endpoints each into an etcd,
    /// every host with a lease of its own kept alive, then takes commands on stdin (add
    /// HOST, del KEY, kill HOST, ping, quit), one answer line each on stdout.
    Sim(Box<sim::SimArgs>),
    /// Counters per link: frames and bytes each way, drops by reason, learning, floods, misses.
    Stats {
        /// Print JSON.
        #[arg(short = 'j', long = "json")]
        json: bool,
    },
}

/// Which demo `vxtap demo` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DemoVariant {
    /// Docker engines with vxtap as their network and IPAM driver.
    Docker,
}

#[derive(Debug, Subcommand)]
enum CniCommand {
    /// Print a conflist naming vxtap network NETWORK and this daemon's run directory.
    Config {
        /// The vxtap network (made with `vxtap network create`, or by Docker).
        network: String,
        /// The conflist's CNI version (1.1.0 only for runtimes whose libcni reads it).
        #[arg(long, default_value = vxtap::cni::CONFLIST_VERSION)]
        cni_version: String,
    },
}

#[derive(Debug, Subcommand)]
enum HostCommand {
    /// List hosts: name, VTEP, daemon pid, start time (seconds since the epoch).
    #[command(alias = "list")]
    Ls {
        /// Print JSON.
        #[arg(short = 'j', long = "json")]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum NetworkCommand {
    /// Create a network; prints its id.
    Create {
        /// Subnet, e.g. 10.22.1.0/24 (default: the next free /24 of 10.0.0.0/8).
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway address, held by br0 on every host (default: the subnet's first address).
        #[arg(long)]
        gateway: Option<Ipv4Addr>,
        /// VXLAN network identifier (default: the next free one from 4096).
        #[arg(long)]
        vni: Option<u32>,
        /// MTU of the overlay (default 1450).
        #[arg(long)]
        mtu: Option<u32>,
        /// Network name.
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Print JSON.
        #[arg(short = 'j', long = "json")]
        json: bool,
    },
    /// Show a network and its endpoints as JSON.
    Inspect {
        /// Network name or id.
        name: String,
    },
    /// Remove a network (refused while it has endpoints).
    #[command(alias = "remove")]
    Rm {
        /// Network name or id.
        name: String,
    },
}

fn network_command(command: NetworkCommand) -> cli::args::Command {
    let (request, json) = match command {
        NetworkCommand::Create {
            subnet,
            gateway,
            vni,
            mtu,
            name,
        } => (
            api::Request::NetworkCreate {
                request: vxtap::cluster::NetworkRequest {
                    name,
                    subnet,
                    gateway,
                    vni,
                    mtu,
                },
            },
            false,
        ),
        NetworkCommand::Ls { json } => (api::Request::NetworkList, json),
        NetworkCommand::Inspect { name } => (api::Request::NetworkInspect { name }, true),
        NetworkCommand::Rm { name } => (api::Request::NetworkRm { name }, false),
    };
    cli::args::Command { request, json }
}

/// The store's security options from the daemon flags; the password from its file or
/// `VXTAP_STORE_PASSWORD` (taken from the environment by `main`, so it never passes through
/// clap or argv, nor on to the commands the daemon runs).
fn store_options(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    env_password: Option<String>,
) -> Result<vxtap::store::StoreOptions, vxtap::store::SecurityError> {
    use vxtap::store::{Password, SecurityError};
    let from_env = env_password.map(Password::new);
    let password = match (password_file, from_env) {
        (Some(_), Some(_)) => return Err(SecurityError::TwoPasswords),
        (Some(path), None) => Some(Password::from_file(&path)?),
        (None, from_env) => from_env,
    };
    Ok(vxtap::store::StoreOptions {
        ca,
        cert,
        key,
        user,
        password,
    })
}

fn system_host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Where the daemon takes the store password from when no file is given.
const PASSWORD_VARIABLE: &str = "VXTAP_STORE_PASSWORD";

fn main() -> ExitCode {
    // A CNI runtime runs its plugins with CNI_COMMAND set and no arguments.
    if std::env::var_os("CNI_COMMAND").is_some() && std::env::args_os().len() == 1 {
        return cni_plugin();
    }
    // Taken out of the environment while the process has one thread, so that nsenter, ip and
    // unshare, which the daemon runs, never inherit it.
    let env_password = std::env::var(PASSWORD_VARIABLE).ok();
    std::env::remove_var(PASSWORD_VARIABLE);
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Daemon(args) => {
            let DaemonArgs {
                port,
                threads,
                underlay_filter,
                busy_poll,
                local_ip,
                host,
                store,
                socket_group,
                store_ca,
                store_cert,
                store_key,
                store_user,
                store_password_file,
                docker,
                docker_plugin_dir,
                docker_host,
                dns,
                dns_upstream,
            } = *args;
            init_logging();
            let store_options = match store_options(
                store_ca,
                store_cert,
                store_key,
                store_user,
                store_password_file,
                env_password,
            ) {
                Ok(options) => options,
                Err(e) => {
                    eprintln!("vxtap daemon: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let resolver = if docker || dns {
                match dns_upstreams(&dns_upstream) {
                    Ok(upstreams) => Some(upstreams),
                    Err(e) => {
                        eprintln!("vxtap daemon: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                None
            };
            let agent = local_ip.map(|vtep| daemon::AgentConfig {
                host: host.unwrap_or_else(system_host_name),
                vtep,
                store_url: store,
                store_options,
                run_dir: cli.run_dir.clone(),
                resolver,
            });
            let docker = docker.then_some(vxtap::docker::DockerOptions {
                plugin_dir: docker_plugin_dir,
                engine: docker_host,
            });
            let options = daemon::Options {
                run_dir: cli.run_dir,
                port,
                threads,
                underlay_filter,
                busy_poll: std::time::Duration::from_micros(busy_poll),
                agent,
                socket_group,
                docker,
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
        Command::Demo {
            variant,
            duration,
            keep,
        } => {
            let docker = variant == Some(DemoVariant::Docker);
            if docker && duration.is_some() {
                eprintln!("vxtap demo docker: --duration is for `vxtap demo` (the Docker demo measures no throughput)");
                return ExitCode::from(2);
            }
            let options = demo::DemoOptions {
                docker,
                duration: duration.unwrap_or(5),
                keep,
            };
            return match demo::run(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let name = if docker {
                        "vxtap demo docker"
                    } else {
                        "vxtap demo"
                    };
                    eprintln!("{name}: {e:#}");
                    // 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
                    let interrupted = matches!(
                        e.downcast_ref::<demo::DemoError>(),
                        Some(demo::DemoError::Interrupted)
                    );
                    ExitCode::from(if interrupted { 130 } else { 1 })
                }
            };
        }
        Command::Bench(args) => {
            let line = std::env::args().collect::<Vec<_>>().join(" ");
            return match bench::run(&args, &line) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vxtap bench: {e}");
                    ExitCode::from(match e {
                        bench::BenchError::BadArgument { .. }
                        | bench::BenchError::UnknownConfig { .. } => 2,
                        bench::BenchError::Interrupted => 130,
                        _ => 1,
                    })
                }
            };
        }
        Command::BenchControl(args) => {
            let line = std::env::args().collect::<Vec<_>>().join(" ");
            return match bench::control::run(&args, &line) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vxtap bench-control: {e}");
                    ExitCode::from(match e {
                        bench::BenchError::BadArgument { .. } => 2,
                        bench::BenchError::Interrupted => 130,
                        _ => 1,
                    })
                }
            };
        }
        Command::BenchFlood(args) => {
            return match bench::run_flood(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vxtap bench-flood: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Sim(args) => {
            return match sim::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vxtap sim: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Network { command } => Ok(network_command(command)),
        Command::Cni {
            command:
                CniCommand::Config {
                    network,
                    cni_version,
                },
        } => {
            return match vxtap::cni::conflist(&network, Some(&cli.run_dir), &cni_version) {
                Ok(conflist) => {
                    println!("{conflist:#}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vxtap cni config: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Host {
            command: HostCommand::Ls { json },
        } => Ok(cli::args::Command {
            request: api::Request::HostList,
            json,
        }),
        Command::Connect {
            network,
            netns,
            ip,
            name,
        } => Ok(cli::args::Command {
            request: api::Request::Connect {
                network,
                netns,
                ip,
                name,
            },
            json: false,
        }),
        Command::Disconnect { network, netns } => Ok(cli::args::Command {
            request: api::Request::Disconnect { network, netns },
            json: false,
        }),
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
    // Colour only for a terminal: a log file or journal gets plain text to read and grep.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
}

/// The resolvers' upstream servers: `--dns-upstream` (IP or IP:PORT), or the nameservers of
/// /etc/resolv.conf.
fn dns_upstreams(given: &[String]) -> Result<Vec<std::net::SocketAddr>, String> {
    if given.is_empty() {
        let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        return Ok(vxtap::dns::upstreams_from_resolv_conf(&conf));
    }
    given
        .iter()
        .map(|text| {
            text.parse::<std::net::SocketAddr>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                .map_err(|_| format!("--dns-upstream {text:?}: give an IP address or IP:PORT"))
        })
        .collect()
}

/// Runs as a CNI plugin: the netconf on stdin, the result or error on stdout.
fn cni_plugin() -> ExitCode {
    use std::io::{Read, Write};
    // A netconf is small; a runtime that sends more is broken, and the plugin must not hang.
    let mut stdin = Vec::new();
    let read = std::io::stdin().take(1 << 20).read_to_end(&mut stdin);
    if let Err(e) = read {
        stdin.clear();
        eprintln!("vxtap (CNI): reading stdin: {e}");
    }
    let (out, status) =
        vxtap::cni::run(&|key| std::env::var(key).ok(), &stdin, &vxtap::cni::Socket);
    let mut stdout = std::io::stdout();
    let _ = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush());
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}

/// `on` or `off`, for flags that take either word.
fn parse_on_off(value: &str) -> Result<bool, String> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("{other:?} is neither on nor off")),
    }
}

//! [`DockerCluster`]: a [`Cluster`] whose hosts each run a real Docker engine beside their
//! `vxtap daemon --docker`, the engine finding the daemon's plugin socket in its own
//! `/run/docker/plugins` and forwarding unknown names to vxtap's resolver (`daemon.json`'s
//! `dns`), as the README tells users to set up a host.
//!
//! Dropping it stops the engines first (their containers' endpoints are released through
//! the daemons, which still run), then the cluster.

use super::cluster::{Cluster, StoreKind};
use super::docker::{DockerEngine, StartOptions};
use super::upstream_dns::UpstreamDns;
use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::Output;

/// The address of vxtap's resolver in every overlay namespace.
pub const RESOLVER: Ipv4Addr = Ipv4Addr::new(169, 254, 53, 53);

/// Hosts with a vxtap daemon and a Docker engine each.
pub struct DockerCluster {
    /// One engine per host (dropped before the cluster).
    pub engines: Vec<DockerEngine>,
    /// The hosts, their daemons and the store.
    pub cluster: Cluster,
    /// Each host's stand-in for its real DNS resolvers (`--dns-upstream`), on its underlay
    /// address, port 5353: vxtap's resolvers forward what they do not own there.
    pub upstreams: Vec<UpstreamDns>,
    plugin_dirs: Vec<tempfile::TempDir>,
}

/// What [`DockerCluster::with`] sets up beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct DockerOptions {
    /// Engines with `--live-restore`.
    pub live_restore: bool,
    /// More daemon flags for every host (`--dns-upstream ...`).
    pub daemon_flags: Vec<String>,
}

impl DockerCluster {
    /// `hosts` hosts on a store of `kind`, each with an engine and `vxtap daemon --docker`.
    ///
    /// # Panics
    ///
    /// As [`Cluster::new`] and [`DockerEngine::start`].
    pub fn new(hosts: usize, kind: StoreKind) -> DockerCluster {
        Self::with(hosts, kind, &DockerOptions::default())
    }

    /// [`new`](Self::new), with `options`.
    ///
    /// # Panics
    ///
    /// As [`new`](Self::new).
    pub fn with(hosts: usize, kind: StoreKind, options: &DockerOptions) -> DockerCluster {
        super::docker::require_docker();
        let mut engines = Vec::new();
        let mut plugin_dirs = Vec::new();
        let mut upstreams = Vec::new();
        let cluster = Cluster::new_with(hosts, kind, |topology, i| {
            let plugins = tempfile::Builder::new()
                .prefix("vxtap-plugins-")
                .tempdir_in("/tmp")
                .expect("a plugin directory");
            let engine = DockerEngine::start_with(
                &topology.hosts[i].ns,
                Some(plugins.path()),
                StartOptions {
                    live_restore: options.live_restore,
                    dns: Some(RESOLVER),
                },
            );
            let host = &topology.hosts[i];
            let upstream = UpstreamDns::start(
                host.ns.path(),
                std::net::SocketAddrV4::new(host.underlay_ip, 5353),
            );
            let mut flags = vec![
                "--dns-upstream".to_owned(),
                upstream.addr().to_string(),
                "--docker".to_owned(),
                "--docker-plugin-dir".to_owned(),
                plugins.path().display().to_string(),
                "--docker-host".to_owned(),
                engine.docker_host(),
            ];
            flags.extend(options.daemon_flags.iter().cloned());
            engines.push(engine);
            plugin_dirs.push(plugins);
            upstreams.push(upstream);
            flags
        });
        DockerCluster {
            engines,
            cluster,
            upstreams,
            plugin_dirs,
        }
    }

    /// Host `i`'s plugin socket (where its engine finds vxtap).
    pub fn plugin_socket(&self, i: usize) -> std::path::PathBuf {
        self.plugin_dirs[i].path().join("vxtap.sock")
    }

    /// `docker ARGS` on host `i`'s engine, whatever the exit status.
    pub fn docker<S: AsRef<OsStr>>(&self, i: usize, args: &[S]) -> Output {
        self.engines[i].docker(args)
    }

    /// `docker ARGS` on host `i`'s engine; panics on failure (with the logs); stdout.
    pub fn docker_ok<S: AsRef<OsStr>>(&self, i: usize, args: &[S]) -> String {
        let out = self.engines[i].docker(args);
        assert!(
            out.status.success(),
            "docker {} on h{} failed: {}\n--- vxtap daemon log (tail) ---\n{}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            i + 1,
            String::from_utf8_lossy(&out.stderr),
            tail(&self.cluster.hosts[i].daemon().log(), 30),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

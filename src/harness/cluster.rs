//! [`Cluster`]: hosts running `vxtap daemon` with the control plane on (`--host`,
//! `--local-ip`, `--store`), sharing a store (a directory, or etcd on the underlay), and
//! containers that the tests connect with `vxtap connect`.
//!
//! ```text
//!  switch ns sw0 ── h1 198.18.0.1 ── h2 198.18.0.2 ── h3 198.18.0.3 ── (etcd 198.18.0.250)
//!  each host: vxtap daemon (nsenter'ed, so its overlay namespaces are real bind mounts)
//!  containers: named namespaces, plumbed by the daemons
//! ```
//!
//! Dropping it stops the daemons, unmounts the overlay namespaces they left under their run
//! directories, then deletes every namespace (containers, hosts, switch, etcd's).

use super::daemon::Daemon;
use super::etcd::{Etcd, EtcdConfig, Permission};
use super::netns::{unique_prefix, Netns, NetnsExt};
use super::topology::{HostKind, Topology};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Which store the daemons share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// `dir:PATH` in a temporary directory.
    Dir,
    /// etcd in a namespace of its own on the underlay (198.18.0.250).
    Etcd,
    /// The same etcd, TLS-only with `--client-cert-auth` and authentication on; the
    /// daemons connect with `etcds://`, a client certificate, and the user `vxtap` whose
    /// role has readwrite on `/vxtap/v1` only (password from a file).
    EtcdSecure,
}

/// The password of the `vxtap` etcd user of [`StoreKind::EtcdSecure`].
const SECURE_PASSWORD: &str = "vxtap-cluster-pw";

/// Where etcd listens on the underlay.
pub const ETCD_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 250);

/// One host of a [`Cluster`].
#[derive(Debug)]
pub struct ClusterHost {
    /// Its daemon while it runs.
    pub daemon: Option<Daemon>,
    /// Host name given to the daemon.
    pub name: String,
    /// Its underlay address (the VTEP).
    pub ip: Ipv4Addr,
    /// Index of its namespace in the topology.
    pub index: usize,
    run_dir: tempfile::TempDir,
    /// Daemon flags of this host beyond the store's (see [`Cluster::new_with`]).
    flags: Vec<String>,
}

impl ClusterHost {
    /// The daemon.
    ///
    /// # Panics
    ///
    /// If it has been killed and not restarted.
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("the host's daemon is running")
    }

    /// Its run directory (kept across restarts).
    pub fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    /// `vxtap ARGS...` against this host's daemon, whatever the exit status.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.daemon().cli(args)
    }

    /// `vxtap ARGS...`, panicking with the daemon log on failure; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        self.daemon().cli_ok(args)
    }

    /// `vxtap network inspect NAME`, parsed.
    pub fn inspect(&self, network: &str) -> Value {
        let out = self.cli_ok(&["network", "inspect", network]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect {network}: {e}: {out}"))
    }

    /// MACs in this host's fdb (`vxtap fdb show -j`), with their VTEPs.
    ///
    /// # Panics
    ///
    /// If the output is not a list of rows with a `mac` and a `dst`: a changed format must
    /// fail the tests that wait for an entry to leave, not let them pass.
    pub fn fdb_entries(&self) -> Vec<(String, String)> {
        let fdb = self.daemon().fdb();
        let rows = fdb
            .as_array()
            .unwrap_or_else(|| panic!("fdb show -j is not a list: {fdb:#}"));
        rows.iter()
            .map(|r| match (r["mac"].as_str(), r["dst"].as_str()) {
                (Some(mac), Some(dst)) => (mac.to_owned(), dst.to_owned()),
                _ => panic!("fdb show -j row without mac or dst: {r:#}"),
            })
            .collect()
    }
}

impl Drop for ClusterHost {
    fn drop(&mut self) {
        drop(self.daemon.take());
        unmount_overlays(self.run_dir.path());
    }
}

/// Unmounts and removes the overlay namespaces a daemon left in `run_dir/netns`.
pub fn unmount_overlays(run_dir: &Path) {
    let Ok(dir) = std::fs::read_dir(run_dir.join("netns")) else {
        return;
    };
    for entry in dir.flatten() {
        if let Err(e) = vxtap::plumbing::netns::remove(&entry.path()) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Hosts with control-plane daemons on one store.
#[derive(Debug)]
pub struct Cluster {
    /// The hosts (dropped first: daemons stop before namespaces go).
    pub hosts: Vec<ClusterHost>,
    /// Containers made by [`Cluster::container`].
    pub containers: Vec<Netns>,
    /// etcd, for [`StoreKind::Etcd`].
    pub etcd: Option<Etcd>,
    /// The underlay: switch and host namespaces (plus etcd's).
    pub topology: Topology,
    store_dir: Option<tempfile::TempDir>,
    store_url: String,
    /// Daemon flags beyond `--store` (the security options of an `etcds://` store).
    store_flags: Vec<String>,
    prefix: String,
}

impl Cluster {
    /// `hosts` hosts named h1.. on the underlay, a store of `kind`, a daemon on each.
    ///
    /// # Panics
    ///
    /// Without root, without etcd for [`StoreKind::Etcd`], or if any step fails.
    pub fn new(hosts: usize, kind: StoreKind) -> Cluster {
        Self::new_with(hosts, kind, |_, _| Vec::new())
    }

    /// [`new`](Self::new), with `flags(topology, i)` called before host `i`'s daemon starts
    /// (to start what it needs in its namespace) and returning more flags for it, which a
    /// [`restart`](Self::restart) passes again.
    ///
    /// # Panics
    ///
    /// As [`new`](Self::new).
    pub fn new_with(
        hosts: usize,
        kind: StoreKind,
        mut flags: impl FnMut(&Topology, usize) -> Vec<String>,
    ) -> Cluster {
        super::require_root();
        // Kernel-kind hosts are bare host namespaces: nothing runs until we start daemons.
        let mut topology = Topology::new(&vec![HostKind::Kernel; hosts]);
        let mut store_flags = Vec::new();
        let (etcd, store_dir, store_url) = match kind {
            StoreKind::Dir => {
                let dir = tempfile::Builder::new()
                    .prefix("vxtap-store-")
                    .tempdir_in("/tmp")
                    .expect("a store directory");
                let url = format!("dir:{}", dir.path().display());
                (None, Some(dir), url)
            }
            StoreKind::Etcd => {
                let last = ETCD_IP.octets()[3];
                let index = topology.add_underlay_ns(last);
                let etcd = Etcd::start(&topology.extras[index], ETCD_IP);
                let url = etcd.url();
                (Some(etcd), None, url)
            }
            StoreKind::EtcdSecure => {
                let last = ETCD_IP.octets()[3];
                let index = topology.add_underlay_ns(last);
                let mut etcd =
                    Etcd::start_with(&topology.extras[index], ETCD_IP, EtcdConfig::secure());
                etcd.enable_auth();
                etcd.add_role("vxtap", Permission::ReadWrite, "/vxtap/v1");
                etcd.add_user("vxtap", SECURE_PASSWORD, &["vxtap"]);
                let pki = etcd.pki().expect("a TLS etcd has certificates");
                let password = pki.password_file("vxtap.password", SECURE_PASSWORD);
                for (flag, path) in [
                    ("--store-ca", pki.path("ca.pem")),
                    ("--store-cert", pki.path("client.pem")),
                    ("--store-key", pki.path("client-key.pem")),
                    ("--store-password-file", password),
                ] {
                    store_flags.push(flag.to_owned());
                    store_flags.push(path.display().to_string());
                }
                store_flags.push("--store-user".to_owned());
                store_flags.push("vxtap".to_owned());
                let url = etcd.url();
                (Some(etcd), None, url)
            }
        };
        let mut cluster = Cluster {
            hosts: Vec::new(),
            containers: Vec::new(),
            etcd,
            topology,
            store_dir,
            store_url,
            store_flags,
            prefix: unique_prefix(),
        };
        for index in 0..hosts {
            let run_dir = tempfile::Builder::new()
                .prefix("vxtap-host-")
                .tempdir_in("/tmp")
                .expect("a run directory");
            let ip = cluster.topology.hosts[index].underlay_ip;
            let mut host = ClusterHost {
                daemon: None,
                name: format!("h{}", index + 1),
                ip,
                index,
                run_dir,
                flags: flags(&cluster.topology, index),
            };
            host.daemon = Some(cluster.start_daemon(&host));
            cluster.hosts.push(host);
        }
        cluster
    }

    /// The store URL the daemons use.
    pub fn store_url(&self) -> &str {
        &self.store_url
    }

    /// The dir store's directory.
    pub fn store_dir(&self) -> Option<PathBuf> {
        self.store_dir.as_ref().map(|d| d.path().to_owned())
    }

    fn start_daemon(&self, host: &ClusterHost) -> Daemon {
        let ip = host.ip.to_string();
        let mut args = vec![
            "--host",
            &host.name,
            "--local-ip",
            &ip,
            "--store",
            &self.store_url,
        ];
        args.extend(self.store_flags.iter().map(String::as_str));
        args.extend(host.flags.iter().map(String::as_str));
        Daemon::start_cluster(
            &self.topology.hosts[host.index].ns,
            host.run_dir.path(),
            &args,
        )
    }

    /// Kills host `i`'s daemon with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(d) = self.hosts[i].daemon.as_mut() {
            d.kill();
        }
        self.hosts[i].daemon = None;
    }

    /// Starts host `i`'s daemon again, in the same run directory.
    pub fn restart(&mut self, i: usize) {
        let daemon = self.start_daemon(&self.hosts[i]);
        self.hosts[i].daemon = Some(daemon);
    }

    /// A new, empty container namespace (`lo` up) called `<prefix>-<role>`; returns its
    /// index in `containers`.
    pub fn container(&mut self, role: &str) -> usize {
        self.containers.push(Netns::new(&self.prefix, role));
        self.containers.len() - 1
    }

    /// `vxtap connect NETWORK <container> --name NAME [--ip IP]` on host `host`; returns the
    /// endpoint line.
    pub fn connect(&self, host: usize, network: &str, container: usize, name: &str) -> String {
        let ns = self.containers[container].name();
        self.hosts[host].cli_ok(&["connect", network, ns, "--name", name])
    }

    /// The IP of endpoint `name` on `network`, from host 0's `network inspect`.
    ///
    /// # Panics
    ///
    /// If there is no such endpoint.
    pub fn endpoint_ip(&self, network: &str, name: &str) -> Ipv4Addr {
        let ip = self.endpoint_field(network, name, "ip");
        ip.parse()
            .unwrap_or_else(|e| panic!("endpoint {name} on {network}: IP {ip:?}: {e}"))
    }

    /// The MAC of endpoint `name` on `network`, from host 0's `network inspect`.
    ///
    /// # Panics
    ///
    /// If there is no such endpoint.
    pub fn endpoint_mac(&self, network: &str, name: &str) -> String {
        self.endpoint_field(network, name, "mac")
    }

    /// Field `field` (a string) of endpoint `name` on `network`, from host 0's inspect.
    fn endpoint_field(&self, network: &str, name: &str, field: &str) -> String {
        let view = self.hosts[0].inspect(network);
        view["endpoints"]
            .as_array()
            .and_then(|eps| eps.iter().find(|e| e["name"] == name))
            .and_then(|e| e[field].as_str())
            .unwrap_or_else(|| panic!("no endpoint {name} on {network}: {view:#}"))
            .to_owned()
    }
}

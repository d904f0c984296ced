//! [`Topology`]: the test harness's face of the shared topology builder
//! ([`vxtap::topology::Topology`]): hosts on an underlay switch, overlay networks across
//! them, containers on those, built the way Docker's overlay driver builds them, with vxtap
//! or the kernel's vxlan device as each host's tunnel endpoint.
//!
//! ```text
//!  switch ns: bridge sw0 ── veth p<i> ──┐            (one per host, 198.18.0.<i>/24)
//!  host ns h<i>: ul0 198.18.0.<i>  ◄────┘   vxtap daemon (or nothing: kernel vxlan)
//!    overlay ns o<n><i>: br0 10.0.0.1/24 ─ LINK (vxtap TAP or kernel vxlan) ─ veth0
//!      container ns c<n><i>: eth0 10.0.0.<first+i-1>/24, MAC 02:42:0a:00:00:<ip>, MTU 1450
//! ```
//!
//! The builder does the work and returns errors; this wrapper panics on them, as a test
//! wants, starts the harness's own [`Daemon`] on vxtap hosts, and adds the assertions tests
//! make about a topology. Everything else (fields, accessors) is the builder's, through
//! `Deref`. The underlay behaves like a wire by default (TX checksums finished before a
//! frame leaves its host; see the builder's docs), and [`Topology::with_underlay`] keeps the
//! bare veth behaviour available to reproduce what a userspace receiver sees without it.
//!
//! Everything lives in namespaces the topology created; dropping it stops the daemons first
//! (they remove their TAPs), then deletes every namespace.

use super::daemon::Daemon;
use super::netns::{unique_prefix, NetnsExt};
use std::net::Ipv4Addr;
use std::ops::{Deref, DerefMut};
use vxtap::topology::{self as builder, TopologyError, Underlay, VtepControl};
use vxtap_dataplane::wire::MacAddr;

pub use vxtap::topology::{
    Attachment, Container, HostKind, NetworkSpec, GATEWAY, UNDERLAY_IF, VXLAN_PORT,
};

/// A host of the harness's topology: its daemon is the harness's [`Daemon`].
pub type Host = builder::Host<Daemon>;

impl VtepControl for Daemon {
    fn vxtap(&self, args: &[&str]) -> Result<String, TopologyError> {
        let out = self.cli(args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(TopologyError::Vxtap {
                host: self.host().to_owned(),
                args: args.join(" "),
                stderr: format!(
                    "{}\ndaemon log:\n{}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    self.log()
                ),
            })
        }
    }
}

/// Hosts on one underlay switch, and the overlay networks across them.
#[derive(Debug)]
pub struct Topology {
    inner: builder::Topology<Daemon>,
}

impl Deref for Topology {
    type Target = builder::Topology<Daemon>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for Topology {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

/// The value of a builder step, or a panic naming what failed.
fn must<T>(what: &str, result: Result<T, TopologyError>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

impl Topology {
    /// The underlay and the hosts, one daemon per vxtap host, no networks yet.
    ///
    /// # Panics
    ///
    /// Without root, or if any setup step fails.
    pub fn new(kinds: &[HostKind]) -> Topology {
        Topology::with_underlay(kinds, true)
    }

    /// [`new`](Self::new), choosing whether the underlay behaves like a wire
    /// (`wire_checksums`, the default) or like a bare veth that lets the next host finish
    /// checksums; see the module documentation.
    pub fn with_underlay(kinds: &[HostKind], wire_checksums: bool) -> Topology {
        Topology::with_daemon_wrapper(kinds, wire_checksums, &[])
    }

    /// [`with_underlay`](Self::with_underlay), with every daemon started through `wrapper`
    /// (see [`Daemon::start_via`]; empty: started directly).
    pub fn with_daemon_wrapper(
        kinds: &[HostKind],
        wire_checksums: bool,
        wrapper: &[&str],
    ) -> Topology {
        super::require_root();
        let mut inner = must(
            "building the underlay switch",
            builder::Topology::new(&unique_prefix(), Underlay::Switch, wire_checksums),
        );
        must("adding the hosts", inner.add_hosts(kinds));
        must(
            "starting the daemons",
            inner.start_daemons(|host, _| {
                Ok(if wrapper.is_empty() {
                    Daemon::start(&host.ns)
                } else {
                    Daemon::start_via(&host.ns, wrapper, &[])
                })
            }),
        );
        Topology { inner }
    }

    /// The recipe: `kinds` hosts and one network, VNI 42 on `vxlan1`, no peers programmed.
    pub fn recipe(kinds: &[HostKind]) -> Topology {
        let mut topology = Topology::new(kinds);
        topology.add_network(NetworkSpec::recipe());
        topology
    }

    /// Adds a namespace on the underlay at `198.18.0.<number>` that is no VTEP (for a
    /// stranger sending datagrams) and returns its index in `extras`.
    pub fn add_underlay_ns(&mut self, number: u8) -> usize {
        must("adding a stranger", self.inner.add_underlay_ns(number))
    }

    /// Adds an overlay network on every host: overlay namespace with `br0`, the tunnel device
    /// on it, a container. Returns the network's index.
    ///
    /// # Panics
    ///
    /// If any step fails (a `vxtap link add` refusal included).
    pub fn add_network(&mut self, spec: NetworkSpec) -> usize {
        let what = format!("adding network VNI {}", spec.vni);
        must(&what, self.inner.add_network(spec))
    }

    /// Host `i` (from 0).
    pub fn host(&self, i: usize) -> &Host {
        &self.inner.hosts[i]
    }

    /// The daemon of host `i`.
    ///
    /// # Panics
    ///
    /// If host `i` runs the kernel's vxlan device.
    pub fn daemon(&self, i: usize) -> &Daemon {
        self.inner.hosts[i]
            .daemon
            .as_ref()
            .unwrap_or_else(|| panic!("host {i} has no vxtap daemon"))
    }

    /// The daemon of host `i`, to stop it.
    ///
    /// # Panics
    ///
    /// If host `i` runs the kernel's vxlan device.
    pub fn daemon_mut(&mut self, i: usize) -> &mut Daemon {
        self.inner.hosts[i]
            .daemon
            .as_mut()
            .unwrap_or_else(|| panic!("host {i} has no vxtap daemon"))
    }

    /// Host `i`'s part of network `net`.
    pub fn attachment(&self, i: usize, net: usize) -> &Attachment {
        &self.inner.hosts[i].networks[net]
    }

    /// The container of host `i` on network `net`.
    pub fn container(&self, i: usize, net: usize) -> &Container {
        &self.attachment(i, net).container
    }

    /// On host `i`, network `net`: answer ARP for `ip` with `mac`.
    pub fn add_neigh(&self, i: usize, net: usize, ip: Ipv4Addr, mac: MacAddr) {
        must(
            "adding a neigh entry",
            self.inner.neigh_add(i, net, ip, mac),
        );
    }

    /// On host `i`, network `net`: send frames for `mac` to host `dst`'s VTEP.
    pub fn add_fdb(&self, i: usize, net: usize, mac: MacAddr, dst: usize) {
        must("adding an fdb entry", self.inner.fdb_add(i, net, mac, dst));
    }

    /// On host `i`, network `net`: add host `dst` to the flood list.
    pub fn append_flood(&self, i: usize, net: usize, dst: usize) {
        must("adding a flood entry", self.inner.flood_append(i, net, dst));
    }

    /// On every host of network `net`: a neigh and an fdb entry for every other host's
    /// container, as Docker's overlay driver programs them.
    pub fn program_static_peers(&self, net: usize) {
        must("programming static peers", self.inner.static_peers(net));
    }

    /// On every host of network `net`: every other host on the flood list.
    pub fn program_flood_lists(&self, net: usize) {
        must("programming flood lists", self.inner.flood_lists(net));
    }

    /// Issue 3, check 7: no kernel vxlan device in any namespace of the topology, except the
    /// one on each overlay of a kernel host; and each vxtap link is a TAP.
    ///
    /// # Panics
    ///
    /// Naming the namespace and the device found.
    pub fn assert_no_kernel_vxlan(&self) {
        let mut allowed = Vec::new();
        for host in &self.hosts {
            for a in &host.networks {
                match host.kind {
                    HostKind::Kernel => allowed.push(a.overlay.name()),
                    HostKind::Vxtap => {
                        let json = a.overlay.ip(&["-d", "-j", "link", "show", "dev", &a.link]);
                        let value: serde_json::Value =
                            serde_json::from_str(&json).expect("ip -j output");
                        let kind = &value[0]["linkinfo"]["info_kind"];
                        let tap = &value[0]["linkinfo"]["info_data"]["type"];
                        assert!(
                            kind == "tun" && tap == "tap",
                            "{} in {} is not a TAP: {json}",
                            a.link,
                            a.overlay.name()
                        );
                    }
                }
            }
        }
        for ns in self.namespaces() {
            let devices = ns.vxlan_devices();
            if allowed.contains(&ns.name()) {
                assert_eq!(
                    devices.len(),
                    1,
                    "the kernel peer's overlay {} should hold exactly its own vxlan device: \
                     {devices:#?}",
                    ns.name()
                );
            } else {
                assert!(
                    devices.is_empty(),
                    "kernel vxlan device in {}: {devices:#?}",
                    ns.name()
                );
            }
        }
    }
}

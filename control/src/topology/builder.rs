//! [`Topology`]: hosts on an underlay, overlay networks across them, containers on those,
//! built the way Docker's overlay driver builds them, with vxtap or the kernel's vxlan device
//! as each host's tunnel endpoint (see the module docs of `topology` for the picture).
//!
//! A vxtap host runs `vxtap link add LINK id VNI proxy learning dstport 4789 netns OVERLAY`
//! and `ip link set LINK master br0 up`; a kernel host creates `ip link add LINK type vxlan
//! id VNI dstport 4789 local IP proxy l2miss l3miss learning` in its host namespace and moves
//! it into the overlay namespace. The peer-programming helpers then add what a control plane
//! would: static fdb and neigh entries per remote container, or a flood list.
//!
//! With `wire_checksums` the underlay behaves like a wire: TX checksum offload is off on
//! every host's `ul0`, so every checksum is finished before a frame leaves its host. A bare
//! veth instead hands the next host `CHECKSUM_PARTIAL` packets, whose inner checksum fields
//! hold only the pseudo-header sum; the kernel's vxlan receiver copes because that state
//! travels with the packet, a userspace receiver reads the unfinished bytes.
//!
//! Bridges are created without multicast snooping, which would otherwise send IGMP reports
//! through the overlay when they come up.
//!
//! Dropping the topology (or [`Topology::teardown`]) stops the daemons first (they remove
//! their TAPs), then deletes every namespace, then undoes the mounts left under its work dir
//! and removes that dir.

use super::{
    mounts, sys, Namespace, TopologyError, VtepControl, GATEWAY, UNDERLAY_IF, UNDERLAY_PREFIX,
    VXLAN_PORT,
};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use vxtap_dataplane::wire::MacAddr;

/// What terminates the tunnel on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// A `vxtap daemon` in the host namespace and a TAP in each overlay namespace.
    Vxtap,
    /// The kernel's vxlan device, created in the host namespace and moved into the overlay.
    Kernel,
}

/// How the hosts are wired together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underlay {
    /// Exactly two hosts on one veth pair (the demo, the benchmark).
    Pair,
    /// Any number of hosts, each on a port of bridge `sw0` in a switch namespace (the tests).
    Switch,
}

/// One overlay network across all hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Its VNI.
    pub vni: u32,
    /// The tunnel device's name in every overlay namespace.
    pub link: String,
    /// Last octet of host 1's container address; host i gets `first_ip + i - 1`.
    pub first_ip: u8,
    /// Extra `vxtap link add` words for every vxtap host (e.g. `ageing 2`).
    pub link_args: Vec<String>,
    /// Extra `vxtap link add` words for one host (index from 0).
    pub host_link_args: Vec<(usize, Vec<String>)>,
}

impl NetworkSpec {
    /// VNI `vni` on device `link`, containers from `10.0.0.<first_ip>`.
    pub fn new(vni: u32, link: &str, first_ip: u8) -> NetworkSpec {
        NetworkSpec {
            vni,
            link: link.to_owned(),
            first_ip,
            link_args: Vec::new(),
            host_link_args: Vec::new(),
        }
    }

    /// The recipe's network: VNI 42 on `vxlan1`, containers from 10.0.0.2.
    pub fn recipe() -> NetworkSpec {
        NetworkSpec::new(42, "vxlan1", 2)
    }

    /// Adds `vxtap link add` words for host `host` (index from 0) only.
    pub fn host_link_args(mut self, host: usize, args: &[&str]) -> NetworkSpec {
        self.host_link_args
            .push((host, args.iter().map(|s| (*s).to_owned()).collect()));
        self
    }

    /// Adds `vxtap link add` words for every vxtap host.
    pub fn link_args(mut self, args: &[&str]) -> NetworkSpec {
        self.link_args.extend(args.iter().map(|s| (*s).to_owned()));
        self
    }
}

/// A container: a namespace with `eth0` (MTU 1450) on an overlay's `br0`.
#[derive(Debug)]
pub struct Container {
    /// Its namespace.
    pub ns: Namespace,
    /// The address of its `eth0`.
    pub ip: Ipv4Addr,
    /// The MAC of its `eth0` (Docker's: 02:42 then the IPv4 address).
    pub mac: MacAddr,
}

/// One host's part of one overlay network.
#[derive(Debug)]
pub struct Attachment {
    /// The network's VNI.
    pub vni: u32,
    /// The tunnel device's name.
    pub link: String,
    /// The container on it.
    pub container: Container,
    /// The overlay namespace holding `br0`, the tunnel device and the container's veth.
    pub overlay: Namespace,
}

/// A host: a namespace on the underlay, maybe a daemon, and its overlay networks.
#[derive(Debug)]
pub struct Host<D> {
    /// The daemon of a vxtap host. First field: it stops before any namespace goes.
    pub daemon: Option<D>,
    /// Its overlay networks, in [`Topology::add_network`] order.
    pub networks: Vec<Attachment>,
    /// Vxtap or kernel.
    pub kind: HostKind,
    /// Its underlay address (`198.18.0.<i>`, i from 1).
    pub underlay_ip: Ipv4Addr,
    /// Short label: `h1`, `h2`, ...
    pub label: String,
    /// Its namespace; the underlay interface in it is `ul0`.
    pub ns: Namespace,
}

/// `ip link add NAME type bridge` without multicast snooping.
fn quiet_bridge(name: &str) -> [&str; 7] {
    ["link", "add", name, "type", "bridge", "mcast_snooping", "0"]
}

/// Docker's container MAC: 02:42 then the IPv4 address.
pub fn mac_for(ip: Ipv4Addr) -> MacAddr {
    let [a, b, c, d] = ip.octets();
    MacAddr([0x02, 0x42, a, b, c, d])
}

/// Hosts on one underlay, the overlay networks across them, and the guard that removes all
/// of it. `D` is the daemon type of vxtap hosts.
#[derive(Debug)]
pub struct Topology<D: VtepControl> {
    /// The hosts, in the order given.
    pub hosts: Vec<Host<D>>,
    /// Namespaces that are no VTEP (strangers on the underlay, the demo's containers).
    pub extras: Vec<Namespace>,
    /// The networks added, in order.
    pub specs: Vec<NetworkSpec>,
    /// The underlay switch (bridge `sw0`), with [`Underlay::Switch`].
    pub switch: Option<Namespace>,
    prefix: String,
    underlay: Underlay,
    wire_checksums: bool,
    /// Work dir (run dirs, logs, store) that teardown unmounts under and removes.
    dir: Option<PathBuf>,
}

impl<D: VtepControl> Topology<D> {
    /// An empty topology: every namespace it makes is named `PREFIX ROLE` (`prefix` must be
    /// unique to the run). With [`Underlay::Switch`] the switch namespace is made now.
    ///
    /// # Errors
    ///
    /// Creating the switch fails.
    pub fn new(
        prefix: &str,
        underlay: Underlay,
        wire_checksums: bool,
    ) -> Result<Topology<D>, TopologyError> {
        let mut topology = Topology {
            hosts: Vec::new(),
            extras: Vec::new(),
            specs: Vec::new(),
            switch: None,
            prefix: prefix.to_owned(),
            underlay,
            wire_checksums,
            dir: None,
        };
        if underlay == Underlay::Switch {
            let switch = Namespace::create(&format!("{prefix}sw"))?;
            switch.run_ip(&quiet_bridge("sw0"))?;
            switch.run_ip(&["link", "set", "sw0", "up"])?;
            topology.switch = Some(switch);
        }
        Ok(topology)
    }

    /// Gives the topology a work dir (daemons' run dirs, logs): teardown unmounts whatever is
    /// still mounted under it and removes it, last.
    pub fn own_dir(&mut self, dir: PathBuf) {
        self.dir = Some(dir);
    }

    /// The prefix of every name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Adds hosts `h<i>` of `kinds` on the underlay (`198.18.0.<i>/24` on `ul0`), without
    /// daemons yet (see [`start_daemons`](Self::start_daemons)).
    ///
    /// # Errors
    ///
    /// A namespace or link step fails, or a pair underlay would not hold exactly two hosts.
    pub fn add_hosts(&mut self, kinds: &[HostKind]) -> Result<(), TopologyError> {
        let first = self.hosts.len();
        if self.underlay == Underlay::Pair && first + kinds.len() != 2 {
            return Err(TopologyError::Shape(format!(
                "a pair underlay joins exactly two hosts, not {}",
                first + kinds.len()
            )));
        }
        for &kind in kinds {
            let number = u8::try_from(self.hosts.len() + 1)
                .ok()
                .filter(|&n| n < 255)
                .ok_or_else(|| TopologyError::Shape("at most 254 hosts".to_owned()))?;
            let label = format!("h{number}");
            let ns = Namespace::create(&format!("{}{label}", self.prefix))?;
            let underlay_ip = Ipv4Addr::new(198, 18, 0, number);
            if let Some(switch) = &self.switch {
                plug_into_switch(switch, &ns, &format!("p{label}"))?;
            }
            self.hosts.push(Host {
                daemon: None,
                networks: Vec::new(),
                kind,
                underlay_ip,
                label,
                ns,
            });
        }
        if self.underlay == Underlay::Pair {
            let [a, b] = [&self.hosts[0].ns, &self.hosts[1].ns];
            veth(a, UNDERLAY_IF, b, UNDERLAY_IF)?;
        }
        for host in &self.hosts[first..] {
            self.address_underlay(&host.ns, UNDERLAY_IF, host.underlay_ip)?;
        }
        Ok(())
    }

    /// Calls `start(host, host index)` for each vxtap host without a daemon, in order, and
    /// keeps the daemon it returns.
    ///
    /// # Errors
    ///
    /// The first `start` that fails; the daemons started before it are kept (and stopped
    /// by the teardown).
    pub fn start_daemons(
        &mut self,
        mut start: impl FnMut(&Host<D>, usize) -> Result<D, TopologyError>,
    ) -> Result<(), TopologyError> {
        for i in 0..self.hosts.len() {
            if self.hosts[i].kind == HostKind::Vxtap && self.hosts[i].daemon.is_none() {
                let daemon = start(&self.hosts[i], i)?;
                self.hosts[i].daemon = Some(daemon);
            }
        }
        Ok(())
    }

    /// `IP/24` on `ifname` in `ns`, TX checksums finished there if the underlay is a wire,
    /// and the link up.
    fn address_underlay(
        &self,
        ns: &Namespace,
        ifname: &str,
        ip: Ipv4Addr,
    ) -> Result<(), TopologyError> {
        ns.run_ip(&[
            "addr",
            "add",
            &format!("{ip}/{UNDERLAY_PREFIX}"),
            "dev",
            ifname,
        ])?;
        if self.wire_checksums {
            ns.enter(|| sys::set_tx_checksum(ifname, false))?
                .map_err(|source| TopologyError::InNamespace {
                    what: format!("turning tx checksum offload off on {ifname}"),
                    name: ns.name().to_owned(),
                    source,
                })?;
        }
        ns.run_ip(&["link", "set", ifname, "up"])?;
        Ok(())
    }

    /// Adds a plain namespace `PREFIX ROLE` (IPv6 off, `lo` up) to the extras; returns its
    /// index there.
    ///
    /// # Errors
    ///
    /// Creating it fails.
    pub fn add_namespace(&mut self, role: &str) -> Result<usize, TopologyError> {
        let ns = Namespace::create(&format!("{}{role}", self.prefix))?;
        self.extras.push(ns);
        Ok(self.extras.len() - 1)
    }

    /// Adds a namespace `x<number>` on the switch at `198.18.0.<number>` that is no VTEP (a
    /// stranger sending datagrams); returns its index in the extras.
    ///
    /// # Errors
    ///
    /// With a pair underlay, or if a step fails.
    pub fn add_underlay_ns(&mut self, number: u8) -> Result<usize, TopologyError> {
        let Some(switch) = &self.switch else {
            return Err(TopologyError::Shape(
                "strangers on the underlay need a switch underlay".to_owned(),
            ));
        };
        let role = format!("x{number}");
        let ns = Namespace::create(&format!("{}{role}", self.prefix))?;
        plug_into_switch(switch, &ns, &format!("p{role}"))?;
        self.address_underlay(&ns, UNDERLAY_IF, Ipv4Addr::new(198, 18, 0, number))?;
        self.extras.push(ns);
        Ok(self.extras.len() - 1)
    }

    /// Adds a namespace `x<n>` on a veth link of its own to host `host`: `stranger_ip/24` on
    /// its `ul0`, `host_ip/24` on the host's `ul<n>` (the benchmark's unknown host, which
    /// floods one host without sharing the hosts' underlay). Returns its index in the extras.
    ///
    /// # Errors
    ///
    /// No such host, or a step fails.
    pub fn add_side_link(
        &mut self,
        host: usize,
        stranger_ip: Ipv4Addr,
        host_ip: Ipv4Addr,
    ) -> Result<usize, TopologyError> {
        let number = self.extras.len() + 1;
        let host_ns = &self.host(host)?.ns;
        let ns = Namespace::create(&format!("{}x{number}", self.prefix))?;
        let host_if = format!("ul{number}");
        veth(&ns, UNDERLAY_IF, host_ns, &host_if)?;
        self.address_underlay(&ns, UNDERLAY_IF, stranger_ip)?;
        self.address_underlay(host_ns, &host_if, host_ip)?;
        self.extras.push(ns);
        Ok(self.extras.len() - 1)
    }

    /// Adds an overlay network on every host: overlay namespace with `br0`, the tunnel device
    /// on it, a container. Returns the network's index.
    ///
    /// # Errors
    ///
    /// A step fails (a `vxtap link add` refusal included).
    pub fn add_network(&mut self, spec: NetworkSpec) -> Result<usize, TopologyError> {
        let net = self.specs.len();
        for i in 0..self.hosts.len() {
            let attachment = self.attach(net, i, &spec)?;
            self.hosts[i].networks.push(attachment);
        }
        self.specs.push(spec);
        Ok(net)
    }

    fn attach(
        &self,
        net: usize,
        i: usize,
        spec: &NetworkSpec,
    ) -> Result<Attachment, TopologyError> {
        let host = &self.hosts[i];
        let overlay = Namespace::create(&format!("{}o{net}{}", self.prefix, i + 1))?;
        let last = u8::try_from(i)
            .ok()
            .and_then(|i| spec.first_ip.checked_add(i))
            .ok_or_else(|| TopologyError::Shape("container addresses past 10.0.0.255".into()))?;
        let ip = Ipv4Addr::new(10, 0, 0, last);
        let container = Container {
            ns: Namespace::create(&format!("{}c{net}{}", self.prefix, i + 1))?,
            ip,
            mac: mac_for(ip),
        };
        overlay.run_ip(&quiet_bridge("br0"))?;
        overlay.run_ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", "br0"])?;
        let link = spec.link.as_str();
        let vni = spec.vni.to_string();
        let port = VXLAN_PORT.to_string();
        match (&host.daemon, host.kind) {
            (Some(daemon), HostKind::Vxtap) => {
                let mut args = vec![
                    "link", "add", link, "id", &vni, "proxy", "learning", "dstport", &port, "netns",
                ];
                args.push(overlay.name());
                args.extend(spec.link_args.iter().map(String::as_str));
                for (h, extra) in &spec.host_link_args {
                    if *h == i {
                        args.extend(extra.iter().map(String::as_str));
                    }
                }
                daemon.vxtap(&args)?;
            }
            (None, HostKind::Vxtap) => {
                return Err(TopologyError::Shape(format!(
                    "vxtap host {} has no daemon",
                    host.label
                )))
            }
            (_, HostKind::Kernel) => {
                let local = host.underlay_ip.to_string();
                host.ns.run_ip(&[
                    "link", "add", link, "type", "vxlan", "id", &vni, "dstport", &port, "local",
                    &local, "proxy", "l2miss", "l3miss", "learning",
                ])?;
                host.ns
                    .run_ip(&["link", "set", link, "netns", overlay.name()])?;
            }
        }
        overlay.run_ip(&["link", "set", link, "master", "br0"])?;
        overlay.run_ip(&[
            "link",
            "add",
            "veth0",
            "mtu",
            "1450",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            container.ns.name(),
            "mtu",
            "1450",
        ])?;
        overlay.run_ip(&["link", "set", "veth0", "master", "br0"])?;
        for dev in ["br0", link, "veth0"] {
            overlay.run_ip(&["link", "set", dev, "up"])?;
        }
        let c = &container.ns;
        c.run_ip(&["link", "set", "eth0", "address", &container.mac.to_string()])?;
        c.run_ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        c.run_ip(&["link", "set", "eth0", "up"])?;
        Ok(Attachment {
            vni: spec.vni,
            link: spec.link.clone(),
            container,
            overlay,
        })
    }

    /// Host `i` (from 0).
    ///
    /// # Errors
    ///
    /// `Shape` if there is no such host.
    pub fn host(&self, i: usize) -> Result<&Host<D>, TopologyError> {
        self.hosts
            .get(i)
            .ok_or_else(|| TopologyError::Shape(format!("no host {i}")))
    }

    /// Host `i`'s part of network `net`.
    ///
    /// # Errors
    ///
    /// `Shape` if there is no such host or network.
    pub fn attachment(&self, i: usize, net: usize) -> Result<&Attachment, TopologyError> {
        self.host(i)?
            .networks
            .get(net)
            .ok_or_else(|| TopologyError::Shape(format!("no network {net} on host {i}")))
    }

    /// The daemon of host `i`.
    ///
    /// # Errors
    ///
    /// `Shape` if there is no such host or it has no daemon.
    pub fn vtep(&self, i: usize) -> Result<&D, TopologyError> {
        self.host(i)?
            .daemon
            .as_ref()
            .ok_or_else(|| TopologyError::Shape(format!("host {i} has no vxtap daemon")))
    }

    /// On host `i`, network `net`: answer ARP for `ip` with `mac`
    /// (`vxtap neigh add` / `ip neigh add ... nud permanent`).
    ///
    /// # Errors
    ///
    /// No such host or network, or the command fails.
    pub fn neigh_add(
        &self,
        i: usize,
        net: usize,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> Result<(), TopologyError> {
        let a = self.attachment(i, net)?;
        let (ip, mac) = (ip.to_string(), mac.to_string());
        let words = ["neigh", "add", &ip, "lladdr", &mac, "dev", &a.link];
        match self.hosts[i].kind {
            HostKind::Vxtap => self.vtep(i)?.vxtap(&words).map(drop),
            HostKind::Kernel => {
                let mut words = words.to_vec();
                words.extend(["nud", "permanent"]);
                a.overlay.run_ip(&words).map(drop)
            }
        }
    }

    /// On host `i`, network `net`: send frames for `mac` to host `dst`'s VTEP
    /// (`vxtap fdb add` / `bridge fdb add ... self`).
    ///
    /// # Errors
    ///
    /// No such host or network, or the command fails.
    pub fn fdb_add(
        &self,
        i: usize,
        net: usize,
        mac: MacAddr,
        dst: usize,
    ) -> Result<(), TopologyError> {
        let a = self.attachment(i, net)?;
        let (mac, dst) = (mac.to_string(), self.host(dst)?.underlay_ip.to_string());
        let (vni, port) = (a.vni.to_string(), VXLAN_PORT.to_string());
        let words = [
            "fdb", "add", &mac, "dev", &a.link, "self", "dst", &dst, "vni", &vni, "port", &port,
        ];
        self.fdb(i, a, &words)
    }

    /// On host `i`, network `net`: add host `dst` to the flood list
    /// (`fdb append 00:00:00:00:00:00 ... dst`).
    ///
    /// # Errors
    ///
    /// No such host or network, or the command fails.
    pub fn flood_append(&self, i: usize, net: usize, dst: usize) -> Result<(), TopologyError> {
        let a = self.attachment(i, net)?;
        let (zero, dst) = (
            MacAddr::ZERO.to_string(),
            self.host(dst)?.underlay_ip.to_string(),
        );
        let words = ["fdb", "append", &zero, "dev", &a.link, "self", "dst", &dst];
        self.fdb(i, a, &words)
    }

    fn fdb(&self, i: usize, a: &Attachment, words: &[&str]) -> Result<(), TopologyError> {
        match self.hosts[i].kind {
            HostKind::Vxtap => self.vtep(i)?.vxtap(words).map(drop),
            HostKind::Kernel => a.overlay.run_bridge(words).map(drop),
        }
    }

    /// On every host of network `net`: a neigh and an fdb entry for every other host's
    /// container, as Docker's overlay driver programs them.
    ///
    /// # Errors
    ///
    /// The first command that fails.
    pub fn static_peers(&self, net: usize) -> Result<(), TopologyError> {
        for i in 0..self.hosts.len() {
            for j in (0..self.hosts.len()).filter(|&j| j != i) {
                let peer = &self.attachment(j, net)?.container;
                self.neigh_add(i, net, peer.ip, peer.mac)?;
                self.fdb_add(i, net, peer.mac, j)?;
            }
        }
        Ok(())
    }

    /// On every host of network `net`: every other host on the flood list.
    ///
    /// # Errors
    ///
    /// The first command that fails.
    pub fn flood_lists(&self, net: usize) -> Result<(), TopologyError> {
        for i in 0..self.hosts.len() {
            for j in (0..self.hosts.len()).filter(|&j| j != i) {
                self.flood_append(i, net, j)?;
            }
        }
        Ok(())
    }

    /// Every namespace of the topology.
    pub fn namespaces(&self) -> Vec<&Namespace> {
        let mut all: Vec<&Namespace> = self.switch.iter().collect();
        all.extend(self.extras.iter());
        for host in &self.hosts {
            all.push(&host.ns);
            for a in &host.networks {
                all.push(&a.overlay);
                all.push(&a.container.ns);
            }
        }
        all
    }

    /// Undoes everything, in order, whatever fails along the way: the daemons (dropped, so
    /// they stop), the namespaces (latest first), then the mounts left under the work dir and
    /// the dir itself. Returns the problems met. Idempotent.
    pub fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for host in &mut self.hosts {
            drop(host.daemon.take());
        }
        let mut namespaces = Vec::new();
        for host in std::mem::take(&mut self.hosts) {
            for a in host.networks {
                namespaces.push(a.container.ns);
                namespaces.push(a.overlay);
            }
            namespaces.push(host.ns);
        }
        namespaces.extend(std::mem::take(&mut self.extras).into_iter().rev());
        namespaces.extend(self.switch.take());
        for ns in namespaces {
            let name = ns.name().to_owned();
            if let Err(e) = ns.delete() {
                problems.push(format!("deleting namespace {name}: {e}"));
            }
        }
        if let Some(dir) = self.dir.take() {
            match mounts::unmount_all_under(&dir) {
                Ok(_) => {}
                Err(errors) => problems.extend(errors),
            }
            // Never recurse into a tree that still has something mounted in it.
            match mounts::current_mounts_under(&dir) {
                Ok(left) if left.is_empty() => {
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            problems.push(format!("removing {}: {e}", dir.display()));
                        }
                    }
                }
                Ok(_) => problems.push(format!(
                    "{} kept: mounts are still active under it",
                    dir.display()
                )),
                Err(e) => problems.push(format!("reading the mount table: {e}")),
            }
        }
        problems
    }

    /// Leaves everything in place (for poking around after a demo): dropping the topology
    /// no longer removes anything. Returns the shell commands that would.
    pub fn keep(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let namespaces: Vec<String> = self
            .namespaces()
            .into_iter()
            .map(|ns| ns.name().to_owned())
            .collect();
        for host in &mut self.hosts {
            if let Some(daemon) = host.daemon.take() {
                std::mem::forget(daemon);
            }
        }
        for host in std::mem::take(&mut self.hosts) {
            for a in host.networks {
                std::mem::forget(a);
            }
            std::mem::forget(host.ns);
        }
        for ns in std::mem::take(&mut self.extras) {
            std::mem::forget(ns);
        }
        if let Some(ns) = self.switch.take() {
            std::mem::forget(ns);
        }
        for name in namespaces.iter().rev() {
            lines.push(format!("ip netns del {name}"));
        }
        if let Some(dir) = self.dir.take() {
            lines.push(format!(
                "grep -o ' {0}/[^ ]*' /proc/self/mountinfo | xargs -r umount",
                dir.display()
            ));
            lines.push(format!("rm -rf {}", dir.display()));
        }
        lines
    }
}

impl<D: VtepControl> Drop for Topology<D> {
    fn drop(&mut self) {
        for problem in self.teardown() {
            eprintln!("cleanup: {problem}");
        }
    }
}

/// A veth pair made inside `a` (never in the root namespace): `a_if` there, `b_if` in `b`.
fn veth(a: &Namespace, a_if: &str, b: &Namespace, b_if: &str) -> Result<(), TopologyError> {
    a.run_ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    Ok(())
}

/// A veth from the switch's bridge (port `port`) to `ns`'s `ul0`, made inside the switch.
fn plug_into_switch(switch: &Namespace, ns: &Namespace, port: &str) -> Result<(), TopologyError> {
    veth(switch, port, ns, UNDERLAY_IF)?;
    switch.run_ip(&["link", "set", port, "master", "sw0", "up"])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_macs_follow_docker() {
        assert_eq!(
            mac_for(Ipv4Addr::new(10, 0, 0, 3)).to_string(),
            "02:42:0a:00:00:03"
        );
    }

    #[test]
    fn specs_collect_their_link_words() {
        let spec = NetworkSpec::recipe()
            .link_args(&["ageing", "2"])
            .host_link_args(1, &["offload", "off"]);
        assert_eq!(
            (spec.vni, spec.link.as_str(), spec.first_ip),
            (42, "vxlan1", 2)
        );
        assert_eq!(spec.link_args, ["ageing", "2"]);
        assert_eq!(
            spec.host_link_args,
            [(1, vec!["offload".into(), "off".into()])]
        );
    }
}

//! [`Topology`]: hosts on an underlay, overlay networks across them, containers on those,
//! built the way Docker's overlay driver builds them, with vxtap or the kernel's vxlan device
//! as each host's tunnel endpoint.
//!
//! ```text
//!  switch ns: bridge sw0 ── veth p<i> ──┐            (one per host, 198.18.0.<i>/24)
//!  host ns h<i>: ul0 198.18.0.<i>  ◄────┘   vxtap daemon (or nothing: kernel vxlan)
//!    overlay ns o<n><i>: br0 10.0.0.1/24 ─ LINK (vxtap TAP or kernel vxlan) ─ veth0
//!      container ns c<n><i>: eth0 10.0.0.<first+i-1>/24, MAC 02:42:0a:00:00:<ip>, MTU 1450
//! ```
//!
//! A vxtap host runs `vxtap link add LINK id VNI proxy learning dstport 4789 netns OVERLAY`
//! and `ip link set LINK master br0 up`, the recipe of /tmp/smoke.sh; a kernel host creates
//! `ip link add LINK type vxlan id VNI dstport 4789 local IP proxy l2miss l3miss learning` in
//! its host namespace and moves it into the overlay namespace, as kernel-overlay.sh does.
//! The peer-programming helpers then add what a control plane would: static fdb and neigh
//! entries per remote container, or a flood list.
//!
//! The underlay behaves like a wire: TX checksum offload is off on every host's `ul0`, so
//! every checksum is finished before a frame leaves its host. A bare veth would instead hand
//! the next host `CHECKSUM_PARTIAL` packets, whose inner TCP/UDP checksum fields still hold
//! only the pseudo-header sum; a kernel vxlan receiver copes because that state travels with
//! the packet, but any userspace receiver (vxtap's UDP socket) reads the unfinished bytes, and
//! the container drops them (TcpInCsumErrors). Real NICs finish checksums on transmit; the
//! bare behaviour stays available through [`Topology::with_underlay`] to reproduce it.
//!
//! Bridges are created without multicast snooping, which would otherwise send IGMP reports
//! through the overlay when they come up and disturb exact counter checks.
//!
//! Everything lives in namespaces the topology created; dropping it stops the daemons first
//! (they remove their TAPs), then deletes every namespace.

use super::daemon::Daemon;
use super::netns::{unique_prefix, Netns};
use std::net::Ipv4Addr;
use vxtap_dataplane::wire::MacAddr;

/// What terminates the tunnel on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// A `vxtap daemon` in the host namespace and a TAP in each overlay namespace.
    Vxtap,
    /// The kernel's vxlan device, created in the host namespace and moved into the overlay.
    Kernel,
}

/// The UDP port every VTEP uses.
pub const VXLAN_PORT: u16 = 4789;
/// The overlay gateway address on every `br0`.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

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
}

/// A container: a namespace with `eth0` on an overlay's `br0`.
#[derive(Debug)]
pub struct Container {
    /// Its namespace.
    pub ns: Netns,
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
    pub overlay: Netns,
}

/// A host: a namespace on the underlay, maybe a daemon, and its overlay networks.
#[derive(Debug)]
pub struct Host {
    /// The daemon of a vxtap host. First field: it stops before any namespace goes.
    pub daemon: Option<Daemon>,
    /// Its overlay networks, in [`Topology::add_network`] order.
    pub networks: Vec<Attachment>,
    /// Vxtap or kernel.
    pub kind: HostKind,
    /// Its underlay address (`198.18.0.<i>`, i from 1).
    pub underlay_ip: Ipv4Addr,
    /// Its namespace; the underlay interface in it is `ul0`.
    pub ns: Netns,
}

/// `ip link add NAME type bridge` without multicast snooping: a snooping bridge joins
/// 224.0.0.106 and sends IGMP reports when it comes up, which would flood through the overlay
/// and disturb the exact counter checks. Nothing else differs from Docker's `br0`.
const QUIET_BRIDGE: [&str; 7] = [
    "link",
    "add",
    "NAME",
    "type",
    "bridge",
    "mcast_snooping",
    "0",
];

/// The underlay interface in every host namespace.
pub const UNDERLAY_IF: &str = "ul0";

/// Hosts on one underlay switch, and the overlay networks across them.
#[derive(Debug)]
pub struct Topology {
    /// The hosts, in the order given.
    pub hosts: Vec<Host>,
    /// Namespaces on the underlay that are no VTEP (strangers, test senders).
    pub extras: Vec<Netns>,
    /// The networks added, in order.
    pub specs: Vec<NetworkSpec>,
    /// The underlay switch: bridge `sw0`.
    pub switch: Netns,
    prefix: String,
    wire_checksums: bool,
}

fn mac_for(ip: Ipv4Addr) -> MacAddr {
    let [a, b, c, d] = ip.octets();
    MacAddr([0x02, 0x42, a, b, c, d])
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
        let prefix = unique_prefix();
        let switch = Netns::new(&prefix, "sw");
        switch.ip(&QUIET_BRIDGE.map(|w| if w == "NAME" { "sw0" } else { w }));
        switch.ip(&["link", "set", "sw0", "up"]);
        let mut topology = Topology {
            hosts: Vec::new(),
            extras: Vec::new(),
            specs: Vec::new(),
            switch,
            prefix,
            wire_checksums,
        };
        for (i, &kind) in kinds.iter().enumerate() {
            let number = u8::try_from(i + 1).expect("fewer than 255 hosts");
            let ns = topology.underlay_ns(&format!("h{number}"), number);
            let daemon = (kind == HostKind::Vxtap).then(|| {
                if wrapper.is_empty() {
                    Daemon::start(&ns)
                } else {
                    Daemon::start_via(&ns, wrapper, &[])
                }
            });
            topology.hosts.push(Host {
                daemon,
                networks: Vec::new(),
                kind,
                underlay_ip: Ipv4Addr::new(198, 18, 0, number),
                ns,
            });
        }
        topology
    }

    /// The recipe: `kinds` hosts and one network, VNI 42 on `vxlan1`, no peers programmed.
    pub fn recipe(kinds: &[HostKind]) -> Topology {
        let mut topology = Topology::new(kinds);
        topology.add_network(NetworkSpec::recipe());
        topology
    }

    /// A namespace on the switch with `ul0` at `198.18.0.<number>/24`.
    fn underlay_ns(&self, role: &str, number: u8) -> Netns {
        let ns = Netns::new(&self.prefix, role);
        let port = format!("p{role}");
        self.switch.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            UNDERLAY_IF,
            "netns",
            ns.name(),
        ]);
        self.switch
            .ip(&["link", "set", &port, "master", "sw0", "up"]);
        ns.ip(&[
            "addr",
            "add",
            &format!("198.18.0.{number}/24"),
            "dev",
            UNDERLAY_IF,
        ]);
        if self.wire_checksums {
            ns.run_in(|| super::sys::set_tx_checksum(UNDERLAY_IF, false))
                .unwrap_or_else(|e| panic!("{UNDERLAY_IF} in {}: tx checksum off: {e}", ns.name()));
        }
        ns.ip(&["link", "set", UNDERLAY_IF, "up"]);
        ns
    }

    /// Adds a namespace on the underlay at `198.18.0.<number>` that is no VTEP (for a
    /// stranger sending datagrams) and returns its index in `extras`.
    pub fn add_underlay_ns(&mut self, number: u8) -> usize {
        let ns = self.underlay_ns(&format!("x{number}"), number);
        self.extras.push(ns);
        self.extras.len() - 1
    }

    /// Adds an overlay network on every host: overlay namespace with `br0`, the tunnel device
    /// on it, a container. Returns the network's index.
    ///
    /// # Panics
    ///
    /// If any step fails (a `vxtap link add` refusal included).
    pub fn add_network(&mut self, spec: NetworkSpec) -> usize {
        let net = self.specs.len();
        for i in 0..self.hosts.len() {
            let attachment = self.attach(net, i, &spec);
            self.hosts[i].networks.push(attachment);
        }
        self.specs.push(spec);
        net
    }

    fn attach(&self, net: usize, i: usize, spec: &NetworkSpec) -> Attachment {
        let host = &self.hosts[i];
        let overlay = Netns::new(&self.prefix, &format!("o{net}{}", i + 1));
        let ip = Ipv4Addr::new(
            10,
            0,
            0,
            spec.first_ip + u8::try_from(i).expect("few hosts"),
        );
        let container = Container {
            ns: Netns::new(&self.prefix, &format!("c{net}{}", i + 1)),
            ip,
            mac: mac_for(ip),
        };
        overlay.ip(&QUIET_BRIDGE.map(|w| if w == "NAME" { "br0" } else { w }));
        overlay.ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", "br0"]);
        let link = spec.link.as_str();
        let vni = spec.vni.to_string();
        match (&host.daemon, host.kind) {
            (Some(daemon), HostKind::Vxtap) => {
                let mut args = vec![
                    "link", "add", link, "id", &vni, "proxy", "learning", "dstport", "4789",
                    "netns",
                ];
                args.push(overlay.name());
                args.extend(spec.link_args.iter().map(String::as_str));
                for (h, extra) in &spec.host_link_args {
                    if *h == i {
                        args.extend(extra.iter().map(String::as_str));
                    }
                }
                daemon.cli_ok(&args);
            }
            _ => {
                let local = host.underlay_ip.to_string();
                host.ns.ip(&[
                    "link", "add", link, "type", "vxlan", "id", &vni, "dstport", "4789", "local",
                    &local, "proxy", "l2miss", "l3miss", "learning",
                ]);
                host.ns.ip(&["link", "set", link, "netns", overlay.name()]);
            }
        }
        overlay.ip(&["link", "set", link, "master", "br0"]);
        overlay.ip(&[
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
        ]);
        overlay.ip(&["link", "set", "veth0", "master", "br0"]);
        for dev in ["br0", link, "veth0"] {
            overlay.ip(&["link", "set", dev, "up"]);
        }
        let c = &container.ns;
        c.ip(&["link", "set", "eth0", "address", &container.mac.to_string()]);
        c.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        c.ip(&["link", "set", "eth0", "up"]);
        Attachment {
            vni: spec.vni,
            link: spec.link.clone(),
            container,
            overlay,
        }
    }

    /// Host `i` (from 0).
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// The daemon of host `i`.
    ///
    /// # Panics
    ///
    /// If host `i` runs the kernel's vxlan device.
    pub fn daemon(&self, i: usize) -> &Daemon {
        self.hosts[i]
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
        self.hosts[i]
            .daemon
            .as_mut()
            .unwrap_or_else(|| panic!("host {i} has no vxtap daemon"))
    }

    /// Host `i`'s part of network `net`.
    pub fn attachment(&self, i: usize, net: usize) -> &Attachment {
        &self.hosts[i].networks[net]
    }

    /// The container of host `i` on network `net`.
    pub fn container(&self, i: usize, net: usize) -> &Container {
        &self.attachment(i, net).container
    }

    /// On host `i`, network `net`: answer ARP for `ip` with `mac`
    /// (`vxtap neigh add` / `ip neigh add ... nud permanent`).
    pub fn add_neigh(&self, i: usize, net: usize, ip: Ipv4Addr, mac: MacAddr) {
        let a = self.attachment(i, net);
        let (ip, mac) = (ip.to_string(), mac.to_string());
        match self.hosts[i].kind {
            HostKind::Vxtap => {
                self.daemon(i)
                    .cli_ok(&["neigh", "add", &ip, "lladdr", &mac, "dev", &a.link]);
            }
            HostKind::Kernel => {
                a.overlay.ip(&[
                    "neigh",
                    "add",
                    &ip,
                    "lladdr",
                    &mac,
                    "dev",
                    &a.link,
                    "nud",
                    "permanent",
                ]);
            }
        }
    }

    /// On host `i`, network `net`: send frames for `mac` to host `dst`'s VTEP
    /// (`vxtap fdb add` / `bridge fdb add ... self`).
    pub fn add_fdb(&self, i: usize, net: usize, mac: MacAddr, dst: usize) {
        let a = self.attachment(i, net);
        let words = [
            "add".to_owned(),
            mac.to_string(),
            "dev".to_owned(),
            a.link.clone(),
            "self".to_owned(),
            "dst".to_owned(),
            self.hosts[dst].underlay_ip.to_string(),
            "vni".to_owned(),
            a.vni.to_string(),
            "port".to_owned(),
            VXLAN_PORT.to_string(),
        ];
        self.fdb(i, a, &words);
    }

    /// On host `i`, network `net`: add host `dst` to the flood list
    /// (`fdb append 00:00:00:00:00:00 ... dst`).
    pub fn append_flood(&self, i: usize, net: usize, dst: usize) {
        let a = self.attachment(i, net);
        let words = [
            "append".to_owned(),
            MacAddr::ZERO.to_string(),
            "dev".to_owned(),
            a.link.clone(),
            "self".to_owned(),
            "dst".to_owned(),
            self.hosts[dst].underlay_ip.to_string(),
        ];
        self.fdb(i, a, &words);
    }

    fn fdb(&self, i: usize, a: &Attachment, words: &[String]) {
        match self.hosts[i].kind {
            HostKind::Vxtap => {
                let mut args = vec!["fdb"];
                args.extend(words.iter().map(String::as_str));
                self.daemon(i).cli_ok(&args);
            }
            HostKind::Kernel => {
                let mut args = vec!["fdb"];
                args.extend(words.iter().map(String::as_str));
                a.overlay.bridge(&args);
            }
        }
    }

    /// On every host of network `net`: a neigh and an fdb entry for every other host's
    /// container, as Docker's overlay driver programs them.
    pub fn program_static_peers(&self, net: usize) {
        for i in 0..self.hosts.len() {
            for j in (0..self.hosts.len()).filter(|&j| j != i) {
                let peer = self.container(j, net);
                self.add_neigh(i, net, peer.ip, peer.mac);
                self.add_fdb(i, net, peer.mac, j);
            }
        }
    }

    /// On every host of network `net`: every other host on the flood list.
    pub fn program_flood_lists(&self, net: usize) {
        for i in 0..self.hosts.len() {
            for j in (0..self.hosts.len()).filter(|&j| j != i) {
                self.append_flood(i, net, j);
            }
        }
    }

    /// Every namespace of the topology.
    pub fn namespaces(&self) -> Vec<&Netns> {
        let mut all = vec![&self.switch];
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

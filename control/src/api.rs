//! The admin protocol between the `vxtap` commands and the daemon: one JSON request per line
//! on the Unix socket `RUN_DIR/vxtap.sock`, answered by one JSON response line.
//!
//! Addresses travel as strings (`"02:42:0a:00:00:03"`) so the wire format stays readable with
//! `socat`; the daemon parses and validates everything again, since the socket is an input.

use crate::cluster::{Endpoint, Host, Network, NetworkRequest};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Settings of a link, as `vxtap link add` takes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSpec {
    /// TAP name inside its namespace.
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// Source address for encapsulated traffic (`local`); the routing table picks when unset.
    pub local: Option<Ipv4Addr>,
    /// UDP port remote VTEPs listen on (`dstport`).
    pub dstport: u16,
    /// Namespace to create the TAP in: a name under /var/run/netns, or a path.
    pub netns: Option<String>,
    /// Answer ARP from the proxy table (`proxy`).
    pub proxy: bool,
    /// Learn remote MACs (`learning` / `nolearning`).
    pub learning: bool,
    /// Seconds a learned entry lives without traffic (`ageing`).
    pub ageing: u64,
    /// Most learned entries (`maxaddress`).
    pub maxaddress: usize,
    /// TAP MTU (`mtu`).
    pub mtu: u32,
    /// Accept frames from any VTEP, not only known ones (`admit any`).
    pub admit_any: bool,
    /// Let the TAP hand over checksum-offloaded frames and TSO superframes (`offload on`),
    /// which vxtap finishes and segments itself; `offload off` moves one MTU frame at a time.
    pub offload: bool,
}

/// How `fdb add` treats an existing entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FdbMode {
    /// Refuse if the MAC has a static entry (`add`).
    Add,
    /// Add a flood-list target (`append`, all-zeros MAC only).
    Append,
    /// Add or overwrite (`replace`).
    Replace,
}

/// One forwarding entry as the commands name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbSpec {
    /// MAC address; all zeros means the flood list.
    pub mac: String,
    /// Link name.
    pub dev: String,
    /// Remote VTEP address (required except for `del` of a unicast MAC).
    pub dst: Option<Ipv4Addr>,
    /// Remote VNI; the link's when unset.
    pub vni: Option<u32>,
    /// Remote port; the link's `dstport` when unset.
    pub port: Option<u16>,
}

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Create a link.
    LinkAdd { spec: LinkSpec },
    /// Delete a link and its TAP.
    LinkDel { name: String },
    /// Show one link or all.
    LinkShow { name: Option<String> },
    /// Add, append or replace a forwarding entry.
    FdbAdd { entry: FdbSpec, mode: FdbMode },
    /// Delete a forwarding entry.
    FdbDel { entry: FdbSpec },
    /// List forwarding entries.
    FdbShow { dev: Option<String> },
    /// Add or replace an ARP proxy entry.
    NeighAdd {
        ip: Ipv4Addr,
        mac: String,
        dev: String,
    },
    /// Delete an ARP proxy entry.
    NeighDel { ip: Ipv4Addr, dev: String },
    /// List ARP proxy entries.
    NeighShow { dev: Option<String> },
    /// Counters of every link.
    Stats,
    /// `network create`.
    NetworkCreate { request: NetworkRequest },
    /// `network ls`.
    NetworkList,
    /// `network inspect NAME`.
    NetworkInspect { name: String },
    /// `network rm NAME`.
    NetworkRm { name: String },
    /// `host ls`: the hosts taking part, as the store has them.
    HostList,
    /// `connect NETWORK NETNS [--ip IP] [--name NAME]`.
    Connect {
        /// Network name or id.
        network: String,
        /// Container namespace: a name under /var/run/netns, or a path.
        netns: String,
        /// Requested IP.
        ip: Option<Ipv4Addr>,
        /// Endpoint name (default: the namespace's name).
        name: Option<String>,
    },
    /// `disconnect NETWORK NETNS`.
    Disconnect {
        /// Network name or id.
        network: String,
        /// Container namespace.
        netns: String,
    },
    /// CNI ADD: plugs `attachment.ifname` into `netns` on `network`.
    CniAdd {
        /// The runtime's container and interface.
        attachment: CniAttachment,
        /// Network name or id.
        network: String,
        /// The container's namespace (`CNI_NETNS`).
        netns: String,
        /// Requested IP (`CNI_ARGS` `IP=`, runtimeConfig `ips`).
        ip: Option<Ipv4Addr>,
        /// Endpoint name.
        name: String,
        /// MTU of the container's interface, at most the network's.
        mtu: Option<u32>,
    },
    /// CNI DEL: removes the attachment; one that is gone is fine.
    CniDel {
        /// The runtime's container and interface.
        attachment: CniAttachment,
    },
    /// CNI CHECK: the attachment is as ADD made it.
    CniCheck {
        /// The runtime's container and interface.
        attachment: CniAttachment,
        /// The container's namespace.
        netns: String,
        /// The address ADD returned, `a.b.c.d/len`.
        address: String,
        /// The routes ADD returned: destination (`a.b.c.d/len`) and gateway.
        #[serde(default)]
        routes: Vec<(String, Option<Ipv4Addr>)>,
    },
    /// CNI GC: removes this host's CNI attachments not in `valid`.
    CniGc {
        /// The attachments the runtime still has.
        valid: Vec<CniAttachment>,
    },
}

/// A CNI attachment: a container's interface, as the runtime names them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CniAttachment {
    /// `CNI_CONTAINERID`.
    pub container: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

/// What CNI ADD made, for the plugin's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniAdded {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Its network's prefix length.
    pub prefix: u8,
    /// Its network's gateway.
    pub gateway: Ipv4Addr,
    /// The veth end on `br0`, and the overlay namespace it is in.
    pub host_ifname: String,
    /// The overlay namespace.
    pub host_netns: String,
    /// The resolver the container can ask, when the daemon serves names.
    pub resolver: Option<Ipv4Addr>,
}

impl Request {
    /// Whether the control-plane agent serves it (rather than the link registry).
    pub fn is_overlay(&self) -> bool {
        matches!(
            self,
            Request::NetworkCreate { .. }
                | Request::NetworkList
                | Request::NetworkInspect { .. }
                | Request::NetworkRm { .. }
                | Request::HostList
                | Request::Connect { .. }
                | Request::Disconnect { .. }
                | Request::CniAdd { .. }
                | Request::CniDel { .. }
                | Request::CniCheck { .. }
                | Request::CniGc { .. }
        )
    }

    /// Whether it changes anything (links, tables, networks, endpoints). A client that is
    /// neither root nor in the admin socket's group may only send requests that do not.
    /// Every request is classified here by name, so a new one must be too.
    pub fn is_mutation(&self) -> bool {
        match self {
            Request::LinkAdd { .. }
            | Request::LinkDel { .. }
            | Request::FdbAdd { .. }
            | Request::FdbDel { .. }
            | Request::NeighAdd { .. }
            | Request::NeighDel { .. }
            | Request::NetworkCreate { .. }
            | Request::NetworkRm { .. }
            | Request::Connect { .. }
            | Request::Disconnect { .. }
            | Request::CniAdd { .. }
            | Request::CniDel { .. }
            | Request::CniGc { .. } => true,
            Request::CniCheck { .. } => false,
            Request::LinkShow { .. }
            | Request::FdbShow { .. }
            | Request::NeighShow { .. }
            | Request::Stats
            | Request::NetworkList
            | Request::NetworkInspect { .. }
            | Request::HostList => false,
        }
    }

    /// The command's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::LinkAdd { .. } => "link add",
            Request::LinkDel { .. } => "link del",
            Request::LinkShow { .. } => "link show",
            Request::FdbAdd { .. } => "fdb add",
            Request::FdbDel { .. } => "fdb del",
            Request::FdbShow { .. } => "fdb show",
            Request::NeighAdd { .. } => "neigh add",
            Request::NeighDel { .. } => "neigh del",
            Request::NeighShow { .. } => "neigh show",
            Request::Stats => "stats",
            Request::NetworkCreate { .. } => "network create",
            Request::NetworkList => "network ls",
            Request::NetworkInspect { .. } => "network inspect",
            Request::NetworkRm { .. } => "network rm",
            Request::HostList => "host ls",
            Request::Connect { .. } => "connect",
            Request::Disconnect { .. } => "disconnect",
            Request::CniAdd { .. } => "cni add",
            Request::CniDel { .. } => "cni del",
            Request::CniCheck { .. } => "cni check",
            Request::CniGc { .. } => "cni gc",
        }
    }
}

/// A network with its endpoints, as `network inspect` and `network ls` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    /// The network.
    #[serde(flatten)]
    pub network: Network,
    /// Its endpoints on every host, by name.
    pub endpoints: Vec<Endpoint>,
}

/// A link as `link show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Its settings.
    #[serde(flatten)]
    pub spec: LinkSpec,
    /// Interface index inside its namespace.
    pub ifindex: u32,
    /// The TAP's MAC.
    pub mac: String,
    /// Offloads the kernel accepted for the TAP (`csum`, `tso4`, `tso6`, `tso_ecn`, `uso4`,
    /// `uso6`).
    pub offloads: Vec<String>,
    /// How the TAP's frames are spread over the workers: `flow-hash` (vxtap's eBPF program:
    /// every flow on one worker from its first frame), `flow-table` (the kernel's, when it
    /// refused the program) or `one-queue`.
    pub steering: String,
    /// Whether the underlay sockets send with UDP GSO (`UDP_SEGMENT`, Linux 4.18+), as
    /// probed when the daemon started. The same for every link: the sockets are shared.
    #[serde(default)]
    pub udp_gso: bool,
    /// Whether the underlay sockets receive with UDP GRO (Linux 5.0+), as probed when the
    /// daemon started. The same for every link.
    #[serde(default)]
    pub udp_gro: bool,
    /// The underlay filter, the same for every link: `on` (an eBPF program on the
    /// underlay sockets drops garbage and datagrams for unknown VNIs or from unknown VTEPs
    /// in the kernel), `off` (`vxtap daemon --underlay-filter off`) or `unavailable` (the
    /// kernel refused it; the daemon's log says why). Empty from an older daemon.
    #[serde(default)]
    pub underlay_filter: String,
    /// Its counters.
    pub stats: LinkStats,
}

/// One drop reason's count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCount {
    /// The reason's name (`unknown_vtep`, ...).
    pub reason: String,
    /// How many.
    pub count: u64,
}

/// Counters of one link: what the switch decided and what the I/O did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStats {
    /// Link name.
    pub name: String,
    /// Its VNI.
    pub vni: u32,
    /// Frames read from the TAP.
    pub tap_rx_frames: u64,
    /// Bytes of those.
    pub tap_rx_bytes: u64,
    /// TAP frames vxtap could not use (see `LinkIoSnapshot::tap_rx_errors`).
    pub tap_rx_errors: u64,
    /// Frames the kernel dropped because the TAP's queue toward vxtap was full (vxtap read
    /// too slowly): the TAP's `tx_dropped`, since the link was made.
    #[serde(default)]
    pub tap_rx_queue_full: u64,
    /// Frames written to the TAP (decapsulated, plus ARP replies).
    pub tap_tx_frames: u64,
    /// Bytes of those.
    pub tap_tx_bytes: u64,
    /// Datagrams with this VNI received from the underlay.
    pub udp_rx_datagrams: u64,
    /// Inner bytes of those.
    pub udp_rx_bytes: u64,
    /// Datagrams sent to VTEPs.
    pub udp_tx_datagrams: u64,
    /// Bytes of those (VXLAN header included).
    pub udp_tx_bytes: u64,
    /// Datagrams not sent: refused by the kernel (other than GSO refusals, which are sent
    /// again as plain datagrams), or left over when the socket buffer was full.
    pub udp_tx_errors: u64,
    /// TAP writes the kernel refused, other than for a full queue.
    pub tap_tx_errors: u64,
    /// TAP writes refused because the TAP queue was full (`EAGAIN`/`ENOBUFS`): frames lost.
    #[serde(default)]
    pub tap_tx_queue_full: u64,
    /// Frames sent to one known VTEP.
    pub forwarded: u64,
    /// Frames flooded.
    pub flooded: u64,
    /// Copies made by flooding.
    pub flood_copies: u64,
    /// ARP requests answered locally.
    pub arp_replies: u64,
    /// Unicast frames to unknown MACs.
    pub l2_misses: u64,
    /// ARP requests for unknown IPs.
    pub l3_misses: u64,
    /// Learned entries now.
    pub learned_entries: usize,
    /// Entries learned in all.
    pub learned: u64,
    /// Learned entries that moved VTEP.
    pub moves: u64,
    /// Learning refused at the cap.
    pub learn_refused: u64,
    /// Entries aged out.
    pub aged_out: u64,
    /// Drops, every reason listed.
    pub drops: Vec<DropCount>,
}

/// Counters that belong to no link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalStats {
    /// Datagrams received on the underlay port.
    pub udp_rx_datagrams: u64,
    /// Datagrams longer than the receive buffer.
    pub udp_rx_oversize: u64,
    /// Receive calls that failed (other than "nothing to read").
    pub udp_rx_errors: u64,
    /// Frames decapsulated for a network whose TAP was being added or removed, dropped.
    #[serde(default)]
    pub udp_rx_no_link: u64,
    /// Datagrams the underlay sockets dropped before vxtap read them, mostly for a full
    /// receive buffer (`SO_RXQ_OVFL`; with the underlay filter, the sockets' drop count
    /// read now, less the filter's drops).
    #[serde(default)]
    pub udp_rx_overflows: u64,
    /// Datagrams the underlay filter dropped in the kernel, every reason and link together
    /// (they are also counted under their reasons in `drops`, here and per link, and never
    /// in `udp_rx_datagrams`).
    #[serde(default)]
    pub udp_rx_filtered: u64,
    /// UDP GSO sends the kernel refused (no UDP GSO, or segments over the path MTU); their
    /// segments left with plain `sendmmsg` instead.
    pub udp_gso_refused: u64,
    /// Sends that carried a `UDP_SEGMENT` control message (0 when the probe found no UDP
    /// GSO).
    #[serde(default)]
    pub udp_gso_sends: u64,
    /// Drops before a link was known (truncated, I flag clear, unknown VNI).
    pub drops: Vec<DropCount>,
    /// Miss events discarded because nobody read them.
    pub events_lost: u64,
}

/// What the control plane refused to program from the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordStats {
    /// Distinct malformed records refused since the daemon started, every reason listed.
    pub refused: Vec<DropCount>,
    /// Distinct records refused because an older record holds what they claim (first claim
    /// wins), every reason listed.
    pub conflicts: Vec<DropCount>,
    /// The records refused in the latest listing of the store.
    pub current: Vec<RefusedRecord>,
}

/// What the resolver of one overlay network's namespace has done (`--docker`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolverCounters {
    /// The network's name.
    pub network: String,
    /// Its counters.
    #[serde(flatten)]
    pub stats: crate::dns::ResolverStats,
}

/// A store record that is not programmed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedRecord {
    /// Its key (escaped).
    pub key: String,
    /// The reason's name.
    pub reason: String,
    /// What exactly (escaped).
    pub detail: String,
}

/// One row of `fdb show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbRow {
    /// MAC (all zeros for flood-list entries).
    pub mac: String,
    /// Link name.
    pub dev: String,
    /// Remote VTEP.
    pub dst: Ipv4Addr,
    /// Remote VNI.
    pub vni: u32,
    /// Remote port.
    pub port: u16,
    /// `permanent` (static or flood list) or `learned`.
    pub state: String,
    /// Seconds since a learned entry was last refreshed.
    pub age: Option<u64>,
}

/// One row of `neigh show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighRow {
    /// IP address.
    pub ip: Ipv4Addr,
    /// Link name.
    pub dev: String,
    /// MAC address.
    pub lladdr: String,
}

/// What a successful request returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Reply {
    /// Done, nothing to show.
    Done,
    /// `link show`.
    Links(Vec<LinkStatus>),
    /// `fdb show`.
    Fdb(Vec<FdbRow>),
    /// `neigh show`.
    Neigh(Vec<NeighRow>),
    /// `network create` / `network inspect`.
    Network(NetworkView),
    /// `network ls`.
    Networks(Vec<NetworkView>),
    /// `connect`.
    Endpoint(Endpoint),
    /// CNI ADD.
    CniAdded(Box<CniAdded>),
    /// `host ls`.
    Hosts(Vec<Host>),
    /// `stats`.
    Stats {
        /// Per link.
        links: Vec<LinkStats>,
        /// Not attributable to a link.
        global: GlobalStats,
        /// Store records refused by the control plane (absent without `--local-ip`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        records: Option<RecordStats>,
        /// The overlay namespaces' resolvers (only with `--docker`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        resolvers: Vec<ResolverCounters>,
    },
}

/// The daemon's answer: a reply, or a one-line error saying what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// It worked.
    Ok(Reply),
    /// It did not, and nothing changed.
    Error(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listing_requests_are_reads() {
        let spec = LinkSpec {
            name: "vx".into(),
            vni: 42,
            local: None,
            dstport: 4789,
            netns: None,
            proxy: false,
            learning: true,
            ageing: 300,
            maxaddress: 0,
            mtu: 1450,
            admit_any: false,
            offload: true,
        };
        let entry = FdbSpec {
            mac: "00:00:00:00:00:00".into(),
            dev: "vx".into(),
            dst: None,
            vni: None,
            port: None,
        };
        let ip = Ipv4Addr::new(10, 0, 0, 2);
        let all = [
            Request::LinkAdd { spec },
            Request::LinkDel { name: "vx".into() },
            Request::LinkShow { name: None },
            Request::FdbAdd {
                entry: entry.clone(),
                mode: FdbMode::Add,
            },
            Request::FdbDel { entry },
            Request::FdbShow { dev: None },
            Request::NeighAdd {
                ip,
                mac: "02:42:0a:00:00:02".into(),
                dev: "vx".into(),
            },
            Request::NeighDel {
                ip,
                dev: "vx".into(),
            },
            Request::NeighShow { dev: None },
            Request::Stats,
            Request::NetworkCreate {
                request: NetworkRequest {
                    name: "n".into(),
                    subnet: None,
                    gateway: None,
                    vni: None,
                    mtu: None,
                },
            },
            Request::NetworkList,
            Request::NetworkInspect { name: "n".into() },
            Request::NetworkRm { name: "n".into() },
            Request::HostList,
            Request::Connect {
                network: "n".into(),
                netns: "c".into(),
                ip: None,
                name: None,
            },
            Request::Disconnect {
                network: "n".into(),
                netns: "c".into(),
            },
        ];
        for request in &all {
            let name = request.name();
            let reads = name.ends_with(" show")
                || name.ends_with(" ls")
                || name.ends_with(" inspect")
                || name == "stats";
            assert_eq!(request.is_mutation(), !reads, "{name}");
        }
    }
}

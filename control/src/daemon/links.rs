//! The daemon's links: each one a TAP in some namespace plus a network in the switch, and
//! every admin request applied to them. A request either applies whole or changes nothing.

use crate::api::{
    DropCount, FdbMode, FdbRow, FdbSpec, GlobalStats, LinkSpec, LinkStats, LinkStatus, NeighRow,
    Reply, Request,
};
use crate::cluster::{MAX_MTU, MIN_MTU};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use vxtap_dataplane::io::{
    netns, queue_full_drops, TapConfig, TapDevice, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6,
    TUN_F_TSO_ECN, TUN_F_USO4, TUN_F_USO6,
};
use vxtap_dataplane::runtime::{FilterDrops, LinkOptions, Runtime, RuntimeError};
use vxtap_dataplane::switch::{Admission, EntryKind, FloodPolicy, Network, NetworkConfig};
use vxtap_dataplane::tunnel::{DecapPolicy, Vtep};
use vxtap_dataplane::wire::{MacAddr, Vni};
use vxtap_dataplane::{DropCounters, Timestamp};

/// Why a request was refused. Each message is one line naming what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No link by that name.
    #[error("unknown dev {0:?}")]
    UnknownDev(String),
    /// The name is in use.
    #[error("a link named {0:?} already exists")]
    NameTaken(String),
    /// The VNI is in use.
    #[error("VNI {vni} is already used by link {name:?}")]
    VniTaken {
        /// The VNI.
        vni: u32,
        /// The link that has it.
        name: String,
    },
    /// A value out of range or of the wrong shape.
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        /// Which value.
        what: &'static str,
        /// As given.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// An entry to delete is not there.
    #[error("{0} not found")]
    NotFound(String),
    /// The data plane refused.
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
    /// Creating the TAP failed (namespace missing, name taken there, ...).
    #[error("{0}")]
    Io(#[from] vxtap_dataplane::io::IoError),
    /// An overlay request to a daemon started without a control plane.
    #[error(
        "`{0}` needs the control plane: start the daemon with --local-ip IP (and --store URL)"
    )]
    NoControlPlane(&'static str),
    /// The switch refused a table change.
    #[error("{0}")]
    Network(#[from] vxtap_dataplane::switch::NetworkError),
    /// The daemon is shutting down: its links are gone or going.
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

/// Applies one admin request, holding the links lock only while tables change: for `link
/// add`, the namespace is opened and checked before the lock is taken and the TAP is made
/// with the lock released, so a namespace path that misbehaves cannot stall `stats`, other
/// clients or the ageing ticker.
///
/// # Errors
///
/// As for [`Links::handle`].
pub fn apply(links: &Mutex<Links>, request: Request) -> Result<Reply, RequestError> {
    let Request::LinkAdd { spec } = request else {
        return lock(links).handle(request);
    };
    let netns_path = check_link_spec(&spec)?;
    let threads = lock(links).reserve(&spec)?;
    let made = make_tap(&spec, netns_path.as_deref(), threads);
    lock(links).finish_add(spec, made).map(|()| Reply::Done)
}

fn lock(links: &Mutex<Links>) -> std::sync::MutexGuard<'_, Links> {
    links.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Checks what a link spec says on its own (no table needed), including that its namespace
/// exists and is a network namespace; returns the namespace's path.
fn check_link_spec(spec: &LinkSpec) -> Result<Option<PathBuf>, RequestError> {
    Vni::new(spec.vni).map_err(|e| invalid("VNI", spec.vni, e))?;
    if !(MIN_MTU..=MAX_MTU).contains(&spec.mtu) {
        return Err(invalid(
            "mtu",
            spec.mtu,
            format!("expected {MIN_MTU}-{MAX_MTU}"),
        ));
    }
    if let Some(local) = spec.local {
        check_local(local)?;
    }
    // Validate the switch settings before creating anything.
    Links::network_config(spec, MacAddr([2, 0, 0, 0, 0, 1])).validate()?;
    let netns_path: Option<PathBuf> = spec.netns.as_deref().map(netns::resolve).transpose()?;
    if let Some(path) = &netns_path {
        // Never blocks, whatever the path is; refuses what is not a network namespace.
        netns::open(path)?;
    }
    Ok(netns_path)
}

/// A TAP made for a link, with what the kernel agreed to.
struct MadeTap {
    tap: TapDevice,
    ifindex: u32,
    mac: MacAddr,
    offload: u32,
    steering: &'static str,
}

/// Makes the TAP of a reserved link in its namespace (no lock needed: it touches no table).
fn make_tap(
    spec: &LinkSpec,
    netns_path: Option<&std::path::Path>,
    queues: usize,
) -> Result<MadeTap, RequestError> {
    let config = TapConfig {
        name: spec.name.clone(),
        queues,
        mtu: spec.mtu,
        offload: 0,
        txqueuelen: Some(1000),
    };
    let tap = TapDevice::create(&config, netns_path)?;
    let offload = if spec.offload {
        negotiate_offload(&tap)
    } else {
        0
    };
    let steering = steer(&tap);
    Ok(MadeTap {
        ifindex: tap.ifindex(),
        mac: tap.mac(),
        tap,
        offload,
        steering,
    })
}

fn invalid(what: &'static str, value: impl ToString, why: impl ToString) -> RequestError {
    RequestError::Invalid {
        what,
        value: value.to_string(),
        why: why.to_string(),
    }
}

struct Link {
    spec: LinkSpec,
    /// The namespace of its TAP, resolved, or `None` for the daemon's own.
    netns: Option<PathBuf>,
    vni: Vni,
    ifindex: u32,
    mac: MacAddr,
    offload: u32,
    steering: &'static str,
}

/// Offload sets to ask the kernel for, best first: kernels before 6.2 refuse USO (which
/// comes only as USO4 and USO6 together), older ones ECN or TSO6. A refused set fails with
/// `EINVAL` and the next is tried.
const OFFLOAD_CHOICES: [u32; 5] = [
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
    TUN_F_CSUM | TUN_F_TSO4,
    TUN_F_CSUM,
];

/// Turns on the best offload set the kernel accepts for `tap`; 0 if none.
fn negotiate_offload(tap: &TapDevice) -> u32 {
    for flags in OFFLOAD_CHOICES {
        match tap.set_offload(flags) {
            Ok(()) => return flags,
            Err(e) => tracing::debug!(tap = tap.name(), flags, error = %e, "offload refused"),
        }
    }
    tracing::warn!(
        tap = tap.name(),
        "the kernel refused every TAP offload; one frame at a time"
    );
    0
}

fn offload_names(flags: u32) -> Vec<String> {
    [
        (TUN_F_CSUM, "csum"),
        (TUN_F_TSO4, "tso4"),
        (TUN_F_TSO6, "tso6"),
        (TUN_F_TSO_ECN, "tso_ecn"),
        (TUN_F_USO4, "uso4"),
        (TUN_F_USO6, "uso6"),
    ]
    .iter()
    .filter(|(f, _)| flags & f != 0)
    .map(|(_, n)| (*n).to_owned())
    .collect()
}

/// Pins every flow of `tap` to one queue with vxtap's steering program; where the kernel
/// refuses it, its flow table stays in charge (a flow's very first reply may then reach
/// another worker than the rest of the flow). Returns what `link show` calls the outcome.
fn steer(tap: &TapDevice) -> &'static str {
    if tap.queues().len() < 2 {
        return "one-queue";
    }
    match tap.steer_by_flow() {
        Ok(()) => "flow-hash",
        Err(e) => {
            tracing::warn!(tap = tap.name(), error = %e, "queue steering stays with the kernel's flow table");
            "flow-table"
        }
    }
}

/// The daemon's state: the runtime and the links it carries.
pub struct Links {
    runtime: Runtime,
    port: u16,
    links: BTreeMap<String, Link>,
    /// Links whose TAP is being made with the lock released: name and VNI are taken.
    pending: BTreeMap<String, Vni>,
    /// Set at shutdown: every link is gone and no new one may come.
    closed: bool,
}

impl Links {
    /// Manages links on `runtime`, which listens on UDP `port`.
    pub fn new(runtime: Runtime, port: u16) -> Links {
        Links {
            runtime,
            port,
            links: BTreeMap::new(),
            pending: BTreeMap::new(),
            closed: false,
        }
    }

    /// The underlay UDP port every link uses.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether a link named `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.links.contains_key(name)
    }

    /// Names of every link (for shutdown logging).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.links.keys().map(String::as_str)
    }

    /// Removes every link (their TAPs disappear) and stops the runtime.
    pub fn shutdown(mut self) {
        self.close();
        self.runtime.shutdown();
    }

    /// Removes every link (their TAPs disappear) and refuses every request from now on; the
    /// runtime keeps running until [`shutdown`](Self::shutdown) or the process ends. For a
    /// shutdown that cannot wait for every holder of the lock to let go.
    pub fn close(&mut self) {
        self.closed = true;
        let names: Vec<String> = self.links.keys().cloned().collect();
        for name in names {
            if let Err(e) = self.link_del(&name) {
                tracing::warn!(link = %name, error = %e, "removing link at shutdown");
            }
        }
    }

    /// Ages learned entries out and logs miss events; run about once a second.
    pub fn tick(&self) {
        let now = self.runtime.now();
        self.runtime.with_switch(|s| {
            let aged = s.age(now);
            if aged > 0 {
                tracing::debug!(aged, "learned entries aged out");
            }
            while let Some(event) = s.pop_event() {
                tracing::debug!(?event, "miss");
            }
        });
    }

    /// Applies one request.
    pub fn handle(&mut self, request: Request) -> Result<Reply, RequestError> {
        if self.closed {
            return Err(RequestError::ShuttingDown);
        }
        match request {
            Request::LinkAdd { spec } => self.link_add(spec).map(|()| Reply::Done),
            Request::LinkDel { name } => self.link_del(&name).map(|()| Reply::Done),
            Request::LinkShow { name } => self.link_show(name.as_deref()).map(Reply::Links),
            Request::FdbAdd { entry, mode } => self.fdb_add(&entry, mode).map(|()| Reply::Done),
            Request::FdbDel { entry } => self.fdb_del(&entry).map(|()| Reply::Done),
            Request::FdbShow { dev } => self.fdb_show(dev.as_deref()).map(Reply::Fdb),
            Request::NeighAdd { ip, mac, dev } => {
                self.neigh_add(ip, &mac, &dev).map(|()| Reply::Done)
            }
            Request::NeighDel { ip, dev } => self.neigh_del(ip, &dev).map(|()| Reply::Done),
            Request::NeighShow { dev } => self.neigh_show(dev.as_deref()).map(Reply::Neigh),
            Request::Stats => Ok(self.stats()),
            other => Err(RequestError::NoControlPlane(other.name())),
        }
    }

    fn link(&self, name: &str) -> Result<&Link, RequestError> {
        self.links
            .get(name)
            .ok_or_else(|| RequestError::UnknownDev(name.to_owned()))
    }

    fn network_config(spec: &LinkSpec, mac: MacAddr) -> NetworkConfig {
        NetworkConfig {
            learning: spec.learning,
            ageing_secs: spec.ageing,
            max_learned: spec.maxaddress,
            flood: FloodPolicy::Flood,
            admission: if spec.admit_any {
                Admission::Any
            } else {
                Admission::KnownVteps
            },
            arp_proxy: spec.proxy,
            gateway: None,
            own_mac: Some(mac),
            dst_port: spec.dstport,
            decap: DecapPolicy::default(),
        }
    }

    /// `link add` with the lock held throughout (the agent's path; its namespaces are the
    /// daemon's own). Admin requests go through [`apply`], which releases the lock while the
    /// namespace is opened and the TAP made.
    fn link_add(&mut self, spec: LinkSpec) -> Result<(), RequestError> {
        let netns_path = check_link_spec(&spec)?;
        let threads = self.reserve(&spec)?;
        let made = make_tap(&spec, netns_path.as_deref(), threads);
        self.finish_add(spec, made)
    }

    /// Checks a new link against the table and the daemon, then reserves its name and VNI
    /// (so a concurrent `link add` cannot take them while its TAP is being made). Returns
    /// how many queues its TAP needs.
    fn reserve(&mut self, spec: &LinkSpec) -> Result<usize, RequestError> {
        if self.closed {
            return Err(RequestError::ShuttingDown);
        }
        if self.links.contains_key(&spec.name) || self.pending.contains_key(&spec.name) {
            return Err(RequestError::NameTaken(spec.name.clone()));
        }
        let vni = Vni::new(spec.vni).map_err(|e| invalid("VNI", spec.vni, e))?;
        let taken = self
            .links
            .iter()
            .map(|(name, l)| (name, l.vni))
            .chain(self.pending.iter().map(|(name, v)| (name, *v)))
            .find(|(_, v)| *v == vni);
        if let Some((name, _)) = taken {
            return Err(RequestError::VniTaken {
                vni: spec.vni,
                name: name.clone(),
            });
        }
        if spec.dstport != self.port {
            return Err(invalid(
                "dstport",
                spec.dstport,
                format!(
                    "this daemon listens on {}; start one with --port {} for it",
                    self.port, spec.dstport
                ),
            ));
        }
        self.pending.insert(spec.name.clone(), vni);
        Ok(self.runtime.threads())
    }

    /// Hands a TAP made for a reserved link to the runtime and records the link; on any
    /// failure (including `made`'s) the reservation is released and the TAP removed.
    fn finish_add(
        &mut self,
        spec: LinkSpec,
        made: Result<MadeTap, RequestError>,
    ) -> Result<(), RequestError> {
        let Some(vni) = self.pending.remove(&spec.name) else {
            // Only `reserve` inserts, and only the caller that reserved removes.
            return Err(RequestError::NameTaken(spec.name));
        };
        let made = made?;
        if self.closed {
            return Err(RequestError::ShuttingDown);
        }
        let netns = made.tap.netns().map(std::path::Path::to_owned);
        // On failure the TAP is dropped inside add_link, which removes it.
        self.runtime.add_link(
            vni,
            Self::network_config(&spec, made.mac),
            made.tap,
            LinkOptions {
                local: spec.local,
                mtu: spec.mtu,
            },
        )?;
        tracing::info!(link = %spec.name, %vni, netns = ?spec.netns, mac = %made.mac, "link added");
        self.links.insert(
            spec.name.clone(),
            Link {
                spec,
                netns,
                vni,
                ifindex: made.ifindex,
                mac: made.mac,
                offload: made.offload,
                steering: made.steering,
            },
        );
        Ok(())
    }

    fn link_del(&mut self, name: &str) -> Result<(), RequestError> {
        let vni = self.link(name)?.vni;
        self.runtime.remove_link(vni)?;
        self.links.remove(name);
        tracing::info!(link = %name, %vni, "link deleted");
        Ok(())
    }

    fn link_show(&self, name: Option<&str>) -> Result<Vec<LinkStatus>, RequestError> {
        let chosen: Vec<&Link> = match name {
            Some(name) => vec![self.link(name)?],
            None => self.links.values().collect(),
        };
        Ok(chosen
            .into_iter()
            .map(|l| LinkStatus {
                spec: l.spec.clone(),
                ifindex: l.ifindex,
                mac: l.mac.to_string(),
                offloads: offload_names(l.offload),
                steering: l.steering.to_owned(),
                udp_gso: self.runtime.offloads().gso,
                udp_gro: self.runtime.offloads().gro,
                underlay_filter: self.runtime.underlay_filter().name().to_owned(),
                stats: self.link_stats(l),
            })
            .collect())
    }

    /// Resolves an fdb entry's destination: the VTEP, with the link's VNI and port by default.
    fn vtep(&self, link: &Link, entry: &FdbSpec) -> Result<Option<Vtep>, RequestError> {
        let Some(ip) = entry.dst else { return Ok(None) };
        let vni = match entry.vni {
            Some(v) => Vni::new(v).map_err(|e| invalid("VNI", v, e))?,
            None => link.vni,
        };
        Ok(Some(Vtep {
            ip,
            port: entry.port.unwrap_or(link.spec.dstport),
            vni,
        }))
    }

    fn fdb_add(&mut self, entry: &FdbSpec, mode: FdbMode) -> Result<(), RequestError> {
        let link = self.link(&entry.dev)?;
        let mac: MacAddr = entry
            .mac
            .parse()
            .map_err(|e| invalid("MAC", &entry.mac, e))?;
        if mac.is_multicast() {
            return Err(invalid(
                "MAC",
                mac,
                "multicast and broadcast MACs cannot be fdb entries",
            ));
        }
        let vtep = self
            .vtep(link, entry)?
            .ok_or_else(|| invalid("dst", "", "an fdb entry needs dst IP"))?;
        let vni = link.vni;
        let now = self.runtime.now();
        self.runtime.with_switch(|s| {
            let net = s.network_mut(vni).map_err(RuntimeError::from)?;
            match (mac.is_zero(), mode) {
                // `replace` names one entry; the flood list holds many, so it is not one.
                (true, FdbMode::Replace) => {
                    return Err(invalid(
                        "MAC",
                        mac,
                        "replace cannot take 00:00:00:00:00:00; `append` adds a VTEP to the flood list and `del ... dst IP` removes one",
                    ))
                }
                (true, _) => net.flood_add(vtep),
                (false, FdbMode::Add) => net.fdb_add(mac, vtep, now),
                (false, FdbMode::Replace) => net.fdb_replace(mac, vtep, now),
                (false, FdbMode::Append) => {
                    return Err(invalid(
                        "MAC",
                        mac,
                        "append takes 00:00:00:00:00:00 (the flood list)",
                    ))
                }
            }
            .map_err(RequestError::from)
        })
    }

    fn fdb_del(&mut self, entry: &FdbSpec) -> Result<(), RequestError> {
        let link = self.link(&entry.dev)?;
        let mac: MacAddr = entry
            .mac
            .parse()
            .map_err(|e| invalid("MAC", &entry.mac, e))?;
        let vtep = self.vtep(link, entry)?;
        let vni = link.vni;
        let what = format!("fdb entry {mac} dev {}", entry.dev);
        self.runtime.with_switch(|s| {
            let net = s.network_mut(vni).map_err(RuntimeError::from)?;
            let found = if mac.is_zero() {
                match vtep {
                    Some(vtep) => net.flood_del(&vtep),
                    // Like the kernel's all-zeros entry: without dst, the whole flood list.
                    None => {
                        let all: Vec<_> = net.flood_list().to_vec();
                        for v in &all {
                            net.flood_del(v);
                        }
                        !all.is_empty()
                    }
                }
            } else {
                match (net.fdb().get(&mac), vtep) {
                    (Some(e), Some(v)) if e.vtep.ip != v.ip => false,
                    (Some(_), _) => net.fdb_del(&mac).is_some(),
                    (None, _) => false,
                }
            };
            if found {
                Ok(())
            } else {
                Err(RequestError::NotFound(what))
            }
        })
    }

    fn fdb_show(&self, dev: Option<&str>) -> Result<Vec<FdbRow>, RequestError> {
        let links: Vec<&Link> = match dev {
            Some(dev) => vec![self.link(dev)?],
            None => self.links.values().collect(),
        };
        let now = self.runtime.now();
        Ok(self.runtime.with_switch(|s| {
            let mut rows = Vec::new();
            for link in links {
                let Some(net) = s.network(link.vni) else {
                    continue;
                };
                fdb_rows(net, &link.spec.name, now, &mut rows);
            }
            rows
        }))
    }

    fn neigh_add(&mut self, ip: Ipv4Addr, mac: &str, dev: &str) -> Result<(), RequestError> {
        let vni = self.link(dev)?.vni;
        let mac: MacAddr = mac.parse().map_err(|e| invalid("lladdr", mac, e))?;
        self.runtime.with_switch(|s| {
            let net = s.network_mut(vni).map_err(RuntimeError::from)?;
            net.neigh_add(ip, mac)
                .map(|_| ())
                .map_err(RequestError::from)
        })
    }

    fn neigh_del(&mut self, ip: Ipv4Addr, dev: &str) -> Result<(), RequestError> {
        let vni = self.link(dev)?.vni;
        self.runtime.with_switch(|s| {
            let net = s.network_mut(vni).map_err(RuntimeError::from)?;
            net.neigh_del(&ip)
                .map(|_| ())
                .ok_or_else(|| RequestError::NotFound(format!("neighbour {ip} dev {dev}")))
        })
    }

    fn neigh_show(&self, dev: Option<&str>) -> Result<Vec<NeighRow>, RequestError> {
        let links: Vec<&Link> = match dev {
            Some(dev) => vec![self.link(dev)?],
            None => self.links.values().collect(),
        };
        Ok(self.runtime.with_switch(|s| {
            let mut rows = Vec::new();
            for link in links {
                let Some(net) = s.network(link.vni) else {
                    continue;
                };
                let mut entries: Vec<_> = net.arp_proxy().iter().collect();
                entries.sort();
                rows.extend(entries.into_iter().map(|(ip, mac)| NeighRow {
                    ip: *ip,
                    dev: link.spec.name.clone(),
                    lladdr: mac.to_string(),
                }));
            }
            rows
        }))
    }

    fn link_stats(&self, link: &Link) -> LinkStats {
        self.link_stats_with(link, &self.runtime.filter_drops())
    }

    /// A link's counters, with the underlay filter's drops for its VNI added to the
    /// switch's under the same reasons.
    fn link_stats_with(&self, link: &Link, filtered: &FilterDrops) -> LinkStats {
        let io = self.runtime.link_counters(link.vni).unwrap_or_default();
        let (mut c, learned_entries) = self
            .runtime
            .with_switch(|s| {
                s.network(link.vni)
                    .map(|n| (*n.counters(), n.fdb().learned_len()))
            })
            .unwrap_or_default();
        if let Some(kernel) = filtered.networks.get(&link.vni) {
            c.drops.add_all(kernel);
        }
        let tap_rx_queue_full = queue_full_drops(&link.spec.name, link.netns.as_deref())
            .unwrap_or_else(|e| {
                tracing::warn!(link = %link.spec.name, error = %e, "TAP drop count unreadable; shown as 0");
                0
            });
        LinkStats {
            name: link.spec.name.clone(),
            vni: link.vni.get(),
            tap_rx_frames: c.tap_frames,
            tap_rx_bytes: c.tap_bytes,
            tap_rx_errors: io.tap_rx_errors,
            tap_tx_frames: io.tap_tx_frames,
            tap_tx_bytes: io.tap_tx_bytes,
            udp_rx_datagrams: c.net_frames,
            udp_rx_bytes: c.net_bytes,
            udp_tx_datagrams: io.udp_tx_datagrams,
            udp_tx_bytes: io.udp_tx_bytes,
            udp_tx_errors: io.udp_tx_errors,
            tap_tx_errors: io.tap_tx_errors,
            tap_tx_queue_full: io.tap_tx_queue_full,
            tap_rx_queue_full,
            forwarded: c.forwarded,
            flooded: c.flooded,
            flood_copies: c.flood_copies,
            arp_replies: c.arp_replies,
            l2_misses: c.l2_misses,
            l3_misses: c.l3_misses,
            learned_entries,
            learned: c.learned,
            moves: c.moves,
            learn_refused: c.learn_refused,
            aged_out: c.aged_out,
            drops: drop_counts(&c.drops),
        }
    }

    fn stats(&self) -> Reply {
        let filtered = self.runtime.filter_drops();
        let links = self
            .links
            .values()
            .map(|l| self.link_stats_with(l, &filtered))
            .collect();
        let (mut drops, events_lost) = self
            .runtime
            .with_switch(|s| (s.counters().drops, s.counters().events_lost));
        drops.add_all(&filtered.global);
        let io = self.runtime.global_counters();
        Reply::Stats {
            links,
            global: GlobalStats {
                udp_rx_datagrams: io.udp_rx_datagrams(),
                udp_rx_oversize: io.udp_rx_oversize(),
                udp_rx_errors: io.udp_rx_errors(),
                udp_rx_no_link: io.udp_rx_no_link(),
                udp_rx_overflows: self.runtime.udp_rx_overflows(),
                udp_rx_filtered: filtered.datagrams,
                udp_gso_refused: io.udp_gso_refused(),
                udp_gso_sends: io.udp_gso_sends(),
                drops: drop_counts(&drops),
                events_lost,
            },
            // The daemon adds the control plane's when it runs one.
            records: None,
            resolvers: Vec::new(),
        }
    }
}

fn drop_counts(drops: &DropCounters) -> Vec<DropCount> {
    drops
        .iter()
        .map(|(reason, count)| DropCount {
            reason: reason.name().to_owned(),
            count,
        })
        .collect()
}

fn fdb_rows(net: &Network, dev: &str, now: Timestamp, rows: &mut Vec<FdbRow>) {
    let mut entries: Vec<_> = net.fdb().iter().collect();
    entries.sort_by_key(|(mac, _)| **mac);
    for (mac, e) in entries {
        let learned = e.kind == EntryKind::Learned;
        rows.push(FdbRow {
            mac: mac.to_string(),
            dev: dev.to_owned(),
            dst: e.vtep.ip,
            vni: e.vtep.vni.get(),
            port: e.vtep.port,
            state: if learned { "learned" } else { "permanent" }.to_owned(),
            age: learned.then(|| now.millis_since(e.updated) / 1000),
        });
    }
    for v in net.flood_list() {
        rows.push(FdbRow {
            mac: MacAddr::ZERO.to_string(),
            dev: dev.to_owned(),
            dst: v.ip,
            vni: v.vni.get(),
            port: v.port,
            state: "permanent".to_owned(),
            age: None,
        });
    }
}

/// `local` must be an address of this host (namespace): binding to it proves that.
fn check_local(local: Ipv4Addr) -> Result<(), RequestError> {
    std::net::UdpSocket::bind((local, 0))
        .map(drop)
        .map_err(|e| invalid("local", local, format!("not an address of this host ({e})")))
}

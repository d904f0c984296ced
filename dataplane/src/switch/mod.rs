//! The forwarding decisions: which VTEPs a frame from the TAP goes to, whether a datagram from
//! the underlay reaches the TAP, what is learned, and what the ARP proxy answers.
//!
//! Pure logic. The switch performs no I/O, reads no clock (every call takes `now`), and
//! allocates nothing per frame: decisions borrow the switch or the input, replies go into
//! buffers the caller owns, and miss events go into a queue sized up front. Control-plane
//! operations (networks, static entries, flood lists, proxy entries) may allocate.

mod arp_proxy;
mod fdb;
mod network;

pub use arp_proxy::{ArpProxyTable, NeighError, ProxyVerdict, ARP_REPLY_LEN};
pub use fdb::{EntryKind, FdbEntry, FdbError, FdbLimits, ForwardingTable, LearnOutcome};
pub use network::{
    Admission, FloodPolicy, Network, NetworkConfig, NetworkError, MAX_LEARNED_LIMIT,
};

use crate::counters::{DropReason, SwitchCounters};
use crate::tunnel::{self, Decapsulated, Vtep};
use crate::wire::{EthernetFrame, MacAddr, Vni};
use core::net::{Ipv4Addr, SocketAddrV4};
use std::collections::{HashMap, VecDeque};

/// A point in time, in milliseconds from an origin the caller picks (a monotonic clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Timestamp {
        Timestamp(millis)
    }

    /// `secs` seconds after the origin.
    pub const fn from_secs(secs: u64) -> Timestamp {
        Timestamp(secs.saturating_mul(1000))
    }

    /// Milliseconds after the origin.
    pub const fn millis(self) -> u64 {
        self.0
    }

    /// This time plus `millis`.
    pub const fn add_millis(self, millis: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(millis))
    }

    /// Milliseconds from `earlier` to `self`; zero if `earlier` is later.
    pub const fn millis_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Something the control plane may want to act on, like the kernel's l2miss/l3miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A unicast frame from the TAP had a destination MAC with no entry.
    L2Miss {
        /// The network.
        vni: Vni,
        /// The unknown destination.
        mac: MacAddr,
    },
    /// An ARP request from the TAP asked for an IP with no proxy entry.
    L3Miss {
        /// The network.
        vni: Vni,
        /// The unknown IP.
        ip: Ipv4Addr,
    },
}

/// What to do with a frame from the TAP side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapAction<'a> {
    /// Encapsulate to this one VTEP.
    Forward(Vtep),
    /// Encapsulate once to each of these VTEPs (no duplicates).
    Flood(&'a [Vtep]),
    /// Write the `ARP_REPLY_LEN`-byte reply now in the caller's buffer back to the TAP.
    ReplyArp,
    /// Nothing goes out; the reason was counted.
    Drop(DropReason),
}

/// What to do with a datagram from the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkAction<'a> {
    /// Write this inner frame to the TAP of network `vni`.
    Deliver {
        /// The network.
        vni: Vni,
        /// The inner Ethernet frame, inside the datagram given.
        frame: &'a [u8],
    },
    /// Nothing goes to the TAP; the reason was counted.
    Drop(DropReason),
}

/// Why a network could not be added or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SwitchError {
    /// A network with this VNI exists.
    #[error("a network with VNI {0} already exists")]
    NetworkExists(Vni),
    /// No network has this VNI.
    #[error("no network has VNI {0}")]
    UnknownNetwork(Vni),
    /// The network's settings are invalid.
    #[error("network {0}: {1}")]
    Network(Vni, NetworkError),
}

/// How many miss events wait for the control plane before new ones are counted as lost.
pub const EVENT_QUEUE_LEN: usize = 1024;

/// Every network on one host, and the decisions between their TAPs and the underlay.
#[derive(Debug, Clone)]
pub struct Switch {
    networks: HashMap<Vni, Network, ahash::RandomState>,
    counters: SwitchCounters,
    events: VecDeque<Event>,
}

impl Default for Switch {
    fn default() -> Self {
        Switch {
            networks: HashMap::default(),
            counters: SwitchCounters::default(),
            events: VecDeque::with_capacity(EVENT_QUEUE_LEN),
        }
    }
}

impl Switch {
    /// An empty switch.
    pub fn new() -> Switch {
        Switch::default()
    }

    /// Adds a network.
    pub fn add_network(&mut self, vni: Vni, config: NetworkConfig) -> Result<(), SwitchError> {
        if self.networks.contains_key(&vni) {
            return Err(SwitchError::NetworkExists(vni));
        }
        let network = Network::new(vni, config).map_err(|e| SwitchError::Network(vni, e))?;
        self.networks.insert(vni, network);
        Ok(())
    }

    /// Removes a network and everything in it.
    pub fn remove_network(&mut self, vni: Vni) -> Result<Network, SwitchError> {
        self.networks
            .remove(&vni)
            .ok_or(SwitchError::UnknownNetwork(vni))
    }

    /// A network, to read.
    pub fn network(&self, vni: Vni) -> Option<&Network> {
        self.networks.get(&vni)
    }

    /// A network, to change its tables or settings.
    pub fn network_mut(&mut self, vni: Vni) -> Result<&mut Network, SwitchError> {
        self.networks
            .get_mut(&vni)
            .ok_or(SwitchError::UnknownNetwork(vni))
    }

    /// Every network, in no particular order.
    pub fn networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.values()
    }

    /// Counters that belong to no network.
    pub fn counters(&self) -> &SwitchCounters {
        &self.counters
    }

    /// The oldest pending miss event.
    pub fn pop_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn push_event(events: &mut VecDeque<Event>, counters: &mut SwitchCounters, event: Event) {
        // Never grow the queue on the data path.
        if events.len() < EVENT_QUEUE_LEN {
            events.push_back(event);
        } else {
            counters.events_lost += 1;
        }
    }

    /// Removes aged-out learned entries from every network; returns how many.
    pub fn age(&mut self, now: Timestamp) -> usize {
        self.networks.values_mut().map(|n| n.age(now)).sum()
    }

    /// Decides on a frame read from network `vni`'s TAP. An ARP reply, if any, goes into
    /// `reply`.
    pub fn from_tap<'s>(
        &'s mut self,
        vni: Vni,
        frame: &[u8],
        now: Timestamp,
        reply: &mut [u8; ARP_REPLY_LEN],
    ) -> TapAction<'s> {
        let Some(net) = self.networks.get_mut(&vni) else {
            self.counters.drops.count(DropReason::UnknownVni);
            return TapAction::Drop(DropReason::UnknownVni);
        };
        let counters = &mut net.counters;
        counters.tap_frames += 1;
        counters.tap_bytes += frame.len() as u64;
        let drop = |counters: &mut crate::counters::NetworkCounters, reason| {
            counters.drops.count(reason);
            TapAction::Drop(reason)
        };
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return drop(counters, DropReason::TapTooShort);
        };
        if !eth.src_addr().is_unicast() {
            return drop(counters, DropReason::TapInvalidSource);
        }
        if !net.config.decap.allow_inner_vlan && eth.ethertype().is_vlan_tag() {
            return drop(counters, DropReason::TapVlan);
        }
        let dst = eth.dst_addr();
        if dst.is_multicast() {
            if net.config.arp_proxy {
                match net.arp_proxy.handle(frame, net.config.gateway, reply) {
                    ProxyVerdict::Pass => {}
                    ProxyVerdict::Replied => {
                        counters.arp_replies += 1;
                        return TapAction::ReplyArp;
                    }
                    ProxyVerdict::Gateway => return drop(counters, DropReason::ArpForGateway),
                    ProxyVerdict::Miss(ip) => {
                        counters.l3_misses += 1;
                        Self::push_event(
                            &mut self.events,
                            &mut self.counters,
                            Event::L3Miss { vni, ip },
                        );
                    }
                }
            }
        } else if let Some(entry) = net.fdb.lookup(&dst, now) {
            counters.forwarded += 1;
            return TapAction::Forward(entry.vtep);
        } else {
            counters.l2_misses += 1;
            Self::push_event(
                &mut self.events,
                &mut self.counters,
                Event::L2Miss { vni, mac: dst },
            );
        }
        match net.config.flood {
            FloodPolicy::Drop => drop(counters, DropReason::FloodDisabled),
            FloodPolicy::Flood if net.flood_list.is_empty() => {
                drop(counters, DropReason::NoFloodTargets)
            }
            FloodPolicy::Flood => {
                counters.flooded += 1;
                counters.flood_copies += net.flood_list.len() as u64;
                TapAction::Flood(&net.flood_list)
            }
        }
    }

    /// Decides on a datagram received from `src` on the underlay, given what
    /// [`tunnel::decap`] made of its VXLAN header: checks the inner frame under the network's
    /// policy, admits the sender, learns, and names the network whose TAP gets the frame.
    /// A header `decap` refused is counted here too, so every datagram is counted once.
    pub fn from_network<'p>(
        &mut self,
        src: SocketAddrV4,
        packet: Result<Decapsulated<'p>, DropReason>,
        now: Timestamp,
    ) -> NetworkAction<'p> {
        self.counters.datagrams += 1;
        let packet = match packet {
            Ok(packet) => packet,
            Err(reason) => {
                self.counters.drops.count(reason);
                return NetworkAction::Drop(reason);
            }
        };
        let vni = packet.vni;
        let Some(net) = self.networks.get_mut(&vni) else {
            self.counters.drops.count(DropReason::UnknownVni);
            return NetworkAction::Drop(DropReason::UnknownVni);
        };
        let admitted = net.admits(src.ip());
        let counters = &mut net.counters;
        counters.net_frames += 1;
        counters.net_bytes += packet.frame.len() as u64;
        let verdict = if admitted {
            tunnel::check(&packet, &net.config.decap)
        } else {
            Err(DropReason::UnknownVtep)
        };
        let inner_src = match verdict {
            Ok(src) if Some(src) == net.config.own_mac => Err(DropReason::OwnSource),
            other => other,
        };
        let inner_src = match inner_src {
            Ok(src) => src,
            Err(reason) => {
                counters.drops.count(reason);
                return NetworkAction::Drop(reason);
            }
        };
        // Learned entries send to the network's port, not the sender's (random) source port.
        let vtep = Vtep {
            ip: *src.ip(),
            port: net.config.dst_port,
            vni,
        };
        if net.config.learning {
            match net.fdb.learn(inner_src, vtep, now) {
                LearnOutcome::Learned => counters.learned += 1,
                LearnOutcome::Moved => counters.moves += 1,
                LearnOutcome::Full => counters.learn_refused += 1,
                LearnOutcome::StaticConflict => {
                    counters.drops.count(DropReason::StaticMacMismatch);
                    return NetworkAction::Drop(DropReason::StaticMacMismatch);
                }
                LearnOutcome::Refreshed | LearnOutcome::Static | LearnOutcome::NotUnicast => {}
            }
        } else if net
            .fdb
            .get(&inner_src)
            .is_some_and(|e| e.kind == EntryKind::Static && e.vtep.ip != vtep.ip)
        {
            counters.drops.count(DropReason::StaticMacMismatch);
            return NetworkAction::Drop(DropReason::StaticMacMismatch);
        }
        counters.delivered += 1;
        NetworkAction::Deliver {
            vni,
            frame: packet.frame,
        }
    }
}

#[cfg(test)]
mod tests;

//! One overlay network (one VNI): its configuration, forwarding table, flood list, ARP proxy
//! table and counters, and the control-plane operations on them. Each operation either
//! applies whole or changes nothing.

use super::arp_proxy::{ArpProxyTable, NeighError};
use super::fdb::{EntryKind, FdbEntry, FdbError, FdbLimits, ForwardingTable};
use super::Timestamp;
use crate::counters::NetworkCounters;
use crate::tunnel::{DecapPolicy, Vtep};
use crate::wire::{MacAddr, Vni};
use core::net::Ipv4Addr;
use std::collections::HashMap;

/// What a network does with broadcast, multicast and unknown unicast from the TAP side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodPolicy {
    /// Replicate to every VTEP on the flood list.
    Flood,
    /// Drop and count (`FloodDisabled`).
    Drop,
}

/// Which underlay senders a network accepts frames from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Only VTEPs the network knows: static forwarding entries and the flood list.
    KnownVteps,
    /// Any sender (classic flood-and-learn VXLAN).
    Any,
}

/// Settings of one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Learn source MACs of decapsulated frames.
    pub learning: bool,
    /// How long learned entries live without traffic, in seconds (kernel default 300).
    pub ageing_secs: u64,
    /// Most learned entries (kernel: `maxaddress`). Memory for them is reserved up front.
    pub max_learned: usize,
    /// Broadcast and unknown unicast handling.
    pub flood: FloodPolicy,
    /// Which senders are accepted.
    pub admission: Admission,
    /// Answer ARP requests from the proxy table (kernel: `proxy`).
    pub arp_proxy: bool,
    /// The local bridge's address, which the proxy never answers for.
    pub gateway: Option<Ipv4Addr>,
    /// The TAP's own MAC: frames arriving with it as source are dropped.
    pub own_mac: Option<MacAddr>,
    /// UDP port learned entries send to (kernel: `dstport`).
    pub dst_port: u16,
    /// Reserved-bit strictness and inner VLAN handling.
    pub decap: DecapPolicy,
}

/// Most learned entries a network may be configured for.
pub const MAX_LEARNED_LIMIT: usize = 1 << 20;

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            learning: true,
            ageing_secs: 300,
            max_learned: 1024,
            flood: FloodPolicy::Flood,
            admission: Admission::KnownVteps,
            arp_proxy: true,
            gateway: None,
            own_mac: None,
            dst_port: crate::wire::vxlan::DEFAULT_PORT,
            decap: DecapPolicy::default(),
        }
    }
}

/// Why a network could not be created or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// `max_learned` is 0 or above `MAX_LEARNED_LIMIT`.
    #[error("maxaddress {0} is out of range (1..={MAX_LEARNED_LIMIT})")]
    MaxLearned(usize),
    /// Ageing of 0 seconds would expire entries as they are learned.
    #[error("ageing time must be at least 1 second")]
    Ageing,
    /// Port 0 cannot be sent to.
    #[error("destination port 0 is invalid")]
    Port,
    /// A VTEP that is not a unicast IPv4 address or has port 0.
    #[error("VTEP {0}:{1} is not a unicast address and port")]
    InvalidVtep(Ipv4Addr, u16),
    /// The VTEP is already on the flood list.
    #[error("{0}:{1} is already on the flood list")]
    FloodExists(Ipv4Addr, u16),
    /// The own MAC must be unicast.
    #[error("{0} is not a unicast MAC")]
    OwnMac(MacAddr),
    /// A forwarding-table change was refused.
    #[error(transparent)]
    Fdb(#[from] FdbError),
    /// An ARP proxy change was refused.
    #[error(transparent)]
    Neigh(#[from] NeighError),
}

impl NetworkConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), NetworkError> {
        if self.max_learned == 0 || self.max_learned > MAX_LEARNED_LIMIT {
            return Err(NetworkError::MaxLearned(self.max_learned));
        }
        if self.ageing_secs == 0 {
            return Err(NetworkError::Ageing);
        }
        if self.dst_port == 0 {
            return Err(NetworkError::Port);
        }
        if let Some(mac) = self.own_mac.filter(|m| !m.is_unicast()) {
            return Err(NetworkError::OwnMac(mac));
        }
        Ok(())
    }

    fn fdb_limits(&self) -> FdbLimits {
        FdbLimits {
            // With learning off nothing is learned, so reserve nothing for it.
            max_learned: if self.learning { self.max_learned } else { 0 },
            ageing_ms: self.ageing_secs.saturating_mul(1000),
        }
    }
}

fn check_vtep(vtep: &Vtep) -> Result<(), NetworkError> {
    let ip = vtep.ip;
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || vtep.port == 0 {
        return Err(NetworkError::InvalidVtep(ip, vtep.port));
    }
    Ok(())
}

/// One VNI's state.
#[derive(Debug, Clone)]
pub struct Network {
    vni: Vni,
    pub(crate) config: NetworkConfig,
    pub(crate) fdb: ForwardingTable,
    pub(crate) flood_list: Vec<Vtep>,
    pub(crate) arp_proxy: ArpProxyTable,
    /// Underlay IPs the network knows, with how many entries name each, for admission.
    known_vteps: HashMap<Ipv4Addr, usize, ahash::RandomState>,
    pub(crate) counters: NetworkCounters,
}

impl Network {
    pub(crate) fn new(vni: Vni, config: NetworkConfig) -> Result<Network, NetworkError> {
        config.validate()?;
        Ok(Network {
            vni,
            config,
            fdb: ForwardingTable::new(config.fdb_limits()),
            flood_list: Vec::new(),
            arp_proxy: ArpProxyTable::default(),
            known_vteps: HashMap::default(),
            counters: NetworkCounters::default(),
        })
    }

    /// The VNI.
    pub fn vni(&self) -> Vni {
        self.vni
    }

    /// The configuration in force.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The forwarding table.
    pub fn fdb(&self) -> &ForwardingTable {
        &self.fdb
    }

    /// The flood list, in the order entries were appended.
    pub fn flood_list(&self) -> &[Vtep] {
        &self.flood_list
    }

    /// The ARP proxy table.
    pub fn arp_proxy(&self) -> &ArpProxyTable {
        &self.arp_proxy
    }

    /// The counters.
    pub fn counters(&self) -> &NetworkCounters {
        &self.counters
    }

    /// The underlay IPs the network knows (static entries and flood list), which it admits
    /// unless it admits any.
    pub fn known_vteps(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.known_vteps.keys().copied()
    }

    /// Whether frames from `ip` are admitted.
    pub(crate) fn admits(&self, ip: &Ipv4Addr) -> bool {
        self.config.admission == Admission::Any || self.known_vteps.contains_key(ip)
    }

    fn know(&mut self, ip: Ipv4Addr) {
        *self.known_vteps.entry(ip).or_insert(0) += 1;
    }

    fn unknow(&mut self, ip: Ipv4Addr) {
        if let Some(n) = self.known_vteps.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.known_vteps.remove(&ip);
            }
        }
    }

    /// Tracks admission for an entry that replaced `previous` (static or learned).
    fn swap_known(&mut self, previous: Option<FdbEntry>, now_static: Option<Ipv4Addr>) {
        if let Some(p) = previous.filter(|p| p.kind == EntryKind::Static) {
            self.unknow(p.vtep.ip);
        }
        if let Some(ip) = now_static {
            self.know(ip);
        }
    }

    /// Changes settings. Turning learning off flushes learned entries; with a lower cap,
    /// learned entries beyond it are dropped. Static entries, the flood list and the proxy
    /// table stay.
    pub fn reconfigure(&mut self, config: NetworkConfig) -> Result<(), NetworkError> {
        config.validate()?;
        let mut fdb = ForwardingTable::new(config.fdb_limits());
        for (mac, entry) in self.fdb.iter() {
            match entry.kind {
                EntryKind::Static => {
                    fdb.replace_static(*mac, entry.vtep, entry.updated)?;
                }
                EntryKind::Learned if config.learning => {
                    // Stamped with its old time, so ageing carries on where it was.
                    fdb.learn(*mac, entry.vtep, entry.updated);
                }
                EntryKind::Learned => {}
            }
        }
        self.fdb = fdb;
        self.config = config;
        Ok(())
    }

    /// `bridge fdb add MAC ... dst IP`: a static entry; refused if one exists.
    pub fn fdb_add(
        &mut self,
        mac: MacAddr,
        vtep: Vtep,
        now: Timestamp,
    ) -> Result<(), NetworkError> {
        check_vtep(&vtep)?;
        let previous = self.fdb.add_static(mac, vtep, now)?;
        self.swap_known(previous, Some(vtep.ip));
        Ok(())
    }

    /// `bridge fdb replace MAC ... dst IP`: add or overwrite a static entry.
    pub fn fdb_replace(
        &mut self,
        mac: MacAddr,
        vtep: Vtep,
        now: Timestamp,
    ) -> Result<(), NetworkError> {
        check_vtep(&vtep)?;
        let previous = self.fdb.replace_static(mac, vtep, now)?;
        self.swap_known(previous, Some(vtep.ip));
        Ok(())
    }

    /// `bridge fdb del MAC`: removes a static or learned entry; returns it.
    pub fn fdb_del(&mut self, mac: &MacAddr) -> Option<FdbEntry> {
        let previous = self.fdb.remove(mac);
        self.swap_known(previous, None);
        previous
    }

    /// `bridge fdb append 00:00:00:00:00:00 ... dst IP`: adds a flood target.
    pub fn flood_add(&mut self, vtep: Vtep) -> Result<(), NetworkError> {
        check_vtep(&vtep)?;
        if self.flood_list.contains(&vtep) {
            return Err(NetworkError::FloodExists(vtep.ip, vtep.port));
        }
        self.flood_list.push(vtep);
        self.know(vtep.ip);
        Ok(())
    }

    /// Removes a flood target; returns whether it was there.
    pub fn flood_del(&mut self, vtep: &Vtep) -> bool {
        let Some(i) = self.flood_list.iter().position(|v| v == vtep) else {
            return false;
        };
        self.flood_list.remove(i);
        self.unknow(vtep.ip);
        true
    }

    /// `ip neigh replace IP lladdr MAC nud permanent`: an ARP proxy entry.
    pub fn neigh_add(
        &mut self,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> Result<Option<MacAddr>, NetworkError> {
        Ok(self.arp_proxy.insert(ip, mac)?)
    }

    /// `ip neigh del IP`.
    pub fn neigh_del(&mut self, ip: &Ipv4Addr) -> Option<MacAddr> {
        self.arp_proxy.remove(ip)
    }

    /// Removes aged-out learned entries; returns how many.
    pub(crate) fn age(&mut self, now: Timestamp) -> usize {
        let removed = self.fdb.age(now);
        self.counters.aged_out += removed as u64;
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vtep(last: u8) -> Vtep {
        Vtep {
            ip: Ipv4Addr::new(198, 18, 0, last),
            port: 4789,
            vni: Vni::new(42).unwrap(),
        }
    }

    fn network(config: NetworkConfig) -> Network {
        Network::new(Vni::new(42).unwrap(), config).unwrap()
    }

    const T0: Timestamp = Timestamp::from_millis(0);
    const MAC: MacAddr = MacAddr([2, 0x42, 10, 0, 0, 3]);

    #[test]
    fn config_is_validated() {
        let bad = [
            NetworkConfig {
                max_learned: 0,
                ..Default::default()
            },
            NetworkConfig {
                max_learned: MAX_LEARNED_LIMIT + 1,
                ..Default::default()
            },
            NetworkConfig {
                ageing_secs: 0,
                ..Default::default()
            },
            NetworkConfig {
                dst_port: 0,
                ..Default::default()
            },
            NetworkConfig {
                own_mac: Some(MacAddr::BROADCAST),
                ..Default::default()
            },
        ];
        for config in bad {
            assert!(
                Network::new(Vni::new(1).unwrap(), config).is_err(),
                "{config:?}"
            );
        }
    }

    #[test]
    fn admission_follows_static_entries_and_flood_list() {
        let mut n = network(NetworkConfig::default());
        let ip2 = vtep(2).ip;
        assert!(!n.admits(&ip2));
        n.fdb_add(MAC, vtep(2), T0).unwrap();
        n.flood_add(vtep(2)).unwrap();
        assert!(n.admits(&ip2));
        n.fdb_del(&MAC);
        assert!(n.admits(&ip2), "still on the flood list");
        assert!(n.flood_del(&vtep(2)));
        assert!(!n.admits(&ip2));
        // Replacing an entry moves admission with it.
        n.fdb_add(MAC, vtep(2), T0).unwrap();
        n.fdb_replace(MAC, vtep(3), T0).unwrap();
        assert!(!n.admits(&ip2) && n.admits(&vtep(3).ip));
        let any = network(NetworkConfig {
            admission: Admission::Any,
            ..Default::default()
        });
        assert!(any.admits(&ip2));
    }

    #[test]
    fn refused_changes_leave_state_alone() {
        let mut n = network(NetworkConfig::default());
        n.fdb_add(MAC, vtep(2), T0).unwrap();
        assert_eq!(
            n.fdb_add(MAC, vtep(3), T0),
            Err(NetworkError::Fdb(FdbError::Exists(MAC)))
        );
        let bad = Vtep {
            ip: Ipv4Addr::new(224, 0, 0, 1),
            ..vtep(2)
        };
        assert!(matches!(
            n.fdb_replace(MAC, bad, T0),
            Err(NetworkError::InvalidVtep(..))
        ));
        assert_eq!(n.fdb().get(&MAC).unwrap().vtep, vtep(2));
        n.flood_add(vtep(2)).unwrap();
        assert!(matches!(
            n.flood_add(vtep(2)),
            Err(NetworkError::FloodExists(..))
        ));
        assert_eq!(n.flood_list(), &[vtep(2)]);
        assert!(n.admits(&vtep(2).ip));
    }

    #[test]
    fn reconfigure_keeps_statics_and_flushes_learning() {
        let mut n = network(NetworkConfig::default());
        n.fdb_add(MAC, vtep(2), T0).unwrap();
        n.fdb.learn(
            MacAddr([2, 0, 0, 0, 0, 9]),
            vtep(3),
            Timestamp::from_millis(5),
        );
        n.reconfigure(NetworkConfig {
            max_learned: 10,
            ..Default::default()
        })
        .unwrap();
        assert_eq!((n.fdb().static_len(), n.fdb().learned_len()), (1, 1));
        let kept = n.fdb().get(&MacAddr([2, 0, 0, 0, 0, 9])).unwrap();
        assert_eq!(kept.updated, Timestamp::from_millis(5));
        n.reconfigure(NetworkConfig {
            learning: false,
            ..Default::default()
        })
        .unwrap();
        assert_eq!((n.fdb().static_len(), n.fdb().learned_len()), (1, 0));
        assert!(n
            .reconfigure(NetworkConfig {
                ageing_secs: 0,
                ..Default::default()
            })
            .is_err());
        assert!(
            !n.config().learning,
            "a refused change keeps the old config"
        );
    }
}

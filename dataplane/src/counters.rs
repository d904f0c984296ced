//! Drop reasons and the counters the core keeps. Every frame the core refuses gets exactly one
//! `DropReason`, and every reason has its own counter, so `vxtap stats` can say why traffic
//! vanished. Plain integers: the runtime owns synchronisation.

use core::fmt;

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// Why the core refused a frame or datagram.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// A stable snake_case name for counters, logs and JSON.
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Network side: the UDP payload is shorter than a VXLAN header.
    Truncated => "truncated",
    /// Network side: the VXLAN I flag is clear, so the VNI means nothing.
    VniFlagClear => "vni_flag_clear",
    /// Network side: a reserved header bit is set and the network is strict.
    ReservedBits => "reserved_bits",
    /// Either side: no network has this VNI.
    UnknownVni => "unknown_vni",
    /// Network side: the sending VTEP is neither in the forwarding table nor on the flood list.
    UnknownVtep => "unknown_vtep",
    /// Network side: the inner frame is shorter than an Ethernet header.
    InnerTooShort => "inner_too_short",
    /// Network side: the inner frame carries a VLAN tag and the network refuses tags.
    InnerVlan => "inner_vlan",
    /// Network side: the inner source MAC is multicast or broadcast.
    MulticastSource => "multicast_source",
    /// Network side: the inner source MAC is all zeros.
    ZeroSource => "zero_source",
    /// Network side: the inner source MAC is our own.
    OwnSource => "own_source",
    /// Network side: the inner source MAC has a static entry behind another VTEP.
    StaticMacMismatch => "static_mac_mismatch",
    /// TAP side: the frame is shorter than an Ethernet header.
    TapTooShort => "tap_too_short",
    /// TAP side: the frame carries a VLAN tag and the network refuses tags.
    TapVlan => "tap_vlan",
    /// TAP side: the source MAC is multicast or all zeros.
    TapInvalidSource => "tap_invalid_source",
    /// TAP side: broadcast, multicast or unknown unicast on a network whose policy is drop.
    FloodDisabled => "flood_disabled",
    /// TAP side: the frame would be flooded, but the flood list is empty.
    NoFloodTargets => "no_flood_targets",
    /// TAP side: an ARP request for the network's gateway, which the local bridge answers.
    ArpForGateway => "arp_for_gateway",
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const REASONS: usize = DropReason::ALL.len();

/// One counter per drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropCounters([u64; REASONS]);

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters([0; REASONS])
    }
}

impl DropCounters {
    /// Counts one drop.
    pub fn count(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }

    /// Counts `n` drops (say, ones the underlay filter made in the kernel).
    pub fn add(&mut self, reason: DropReason, n: u64) {
        self.0[reason as usize] += n;
    }

    /// Adds every count of `other`.
    pub fn add_all(&mut self, other: &DropCounters) {
        for (reason, n) in other.iter() {
            self.add(reason, n);
        }
    }

    /// How many drops had this reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Every reason with its count, zeros included, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r)))
    }
}

/// What the switch saw and did on one network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkCounters {
    /// Frames that entered from the TAP side.
    pub tap_frames: u64,
    /// Bytes of those frames.
    pub tap_bytes: u64,
    /// Datagrams with this network's VNI that arrived from the underlay.
    pub net_frames: u64,
    /// Bytes of their inner frames.
    pub net_bytes: u64,
    /// Decapsulated frames handed to the TAP.
    pub delivered: u64,
    /// TAP frames sent to exactly one VTEP.
    pub forwarded: u64,
    /// TAP frames replicated to the flood list.
    pub flooded: u64,
    /// Copies made by flooding (one per flood-list VTEP).
    pub flood_copies: u64,
    /// ARP requests answered from the proxy table.
    pub arp_replies: u64,
    /// Unicast frames whose destination MAC was not in the table.
    pub l2_misses: u64,
    /// ARP requests whose target IP was not in the proxy table.
    pub l3_misses: u64,
    /// New learned entries.
    pub learned: u64,
    /// Learned entries that moved to another VTEP.
    pub moves: u64,
    /// Learning refused because the table held `max_learned` entries.
    pub learn_refused: u64,
    /// Learned entries removed by ageing.
    pub aged_out: u64,
    /// Drops by reason.
    pub drops: DropCounters,
}

/// What the switch saw that belongs to no network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwitchCounters {
    /// Datagrams offered from the underlay.
    pub datagrams: u64,
    /// Drops before a network was known (truncated, I flag clear, unknown VNI).
    pub drops: DropCounters,
    /// Miss events discarded because the control plane did not drain the queue.
    pub events_lost: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter_and_name() {
        let mut counters = DropCounters::default();
        for (i, &reason) in DropReason::ALL.iter().enumerate() {
            for _ in 0..=i {
                counters.count(reason);
            }
        }
        for (i, (reason, n)) in counters.iter().enumerate() {
            assert_eq!(n, i as u64 + 1, "{reason}");
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }
}

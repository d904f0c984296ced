//! The runtime's side of the underlay filter (`io::filter`): whether it runs, keeping its
//! maps in step with the switch after every change, and failing open when it cannot.
//!
//! Every change to which networks exist or whom they admit goes through
//! `Runtime::with_switch`, `add_link` or `remove_link`, and each of them calls [`sync`]
//! with the switch still locked, so the maps change in the same order as the tables. This
//! module never drops traffic the switch would take: a map that refuses a network
//! detaches the filter.

use crate::io::filter::{FilterDrops, NetworkAdmission, UnderlayFilter};
use crate::io::{IoError, UdpSocket};
use crate::switch::{Admission, Switch};
use crate::wire::Vni;
use std::collections::BTreeMap;

/// Whether the underlay filter runs, as `link show` and the start-up log say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterStatus {
    /// Attached to every underlay socket: datagrams that are plainly not ours are dropped
    /// in the kernel.
    On,
    /// Turned off by the operator (`--underlay-filter off`): every datagram reaches userspace.
    Off,
    /// The kernel refused it at start-up, or it failed later and was detached (the log
    /// says why): every datagram reaches userspace.
    Unavailable,
}

impl FilterStatus {
    /// `on`, `off` or `unavailable`.
    pub fn name(self) -> &'static str {
        match self {
            FilterStatus::On => "on",
            FilterStatus::Off => "off",
            FilterStatus::Unavailable => "unavailable",
        }
    }
}

/// The filter, if one was loaded (it stays, detached, after a failure: its counts remain).
pub(crate) struct FilterSlot {
    filter: Option<UnderlayFilter>,
    wanted: bool,
    /// The fingerprint of the admissions last written to the maps: most calls (stats,
    /// ageing) change none, and then nothing is built or written.
    synced: Option<u64>,
}

impl FilterSlot {
    /// Loads and proves the filter if `wanted`; a refusal is logged and leaves none.
    pub(crate) fn start(wanted: bool) -> FilterSlot {
        let filter = if wanted {
            match UnderlayFilter::load() {
                Ok(filter) => Some(filter),
                Err(error) => {
                    tracing::warn!(%error, "underlay filter unavailable: every datagram is checked in userspace");
                    None
                }
            }
        } else {
            None
        };
        FilterSlot {
            filter,
            wanted,
            synced: None,
        }
    }

    /// Runs the filter on `socket`; a refusal detaches it from every socket.
    pub(crate) fn attach(&mut self, socket: &UdpSocket) {
        if let Some(filter) = self.filter.as_mut() {
            if let Err(error) = filter.attach(socket) {
                fail_open(filter, &error);
            }
        }
    }

    pub(crate) fn status(&self) -> FilterStatus {
        match &self.filter {
            Some(filter) if filter.attached() => FilterStatus::On,
            _ if !self.wanted => FilterStatus::Off,
            _ => FilterStatus::Unavailable,
        }
    }

    /// Brings the filter's maps in line with `switch`.
    pub(crate) fn sync(&mut self, switch: &Switch) {
        let Some(filter) = self.filter.as_mut().filter(|f| f.attached()) else {
            return;
        };
        let fingerprint = fingerprint(switch);
        if self.synced == Some(fingerprint) {
            return;
        }
        match filter.sync(&admissions(switch)) {
            Ok(()) => self.synced = Some(fingerprint),
            Err(error) => fail_open(filter, &error),
        }
    }

    /// What the filter dropped; nothing without one (or if its counters cannot be read).
    pub(crate) fn drops(&self) -> FilterDrops {
        self.filter
            .as_ref()
            .and_then(|f| {
                f.drops()
                    .inspect_err(|error| tracing::warn!(%error, "underlay filter counts unreadable; shown as 0"))
                    .ok()
            })
            .unwrap_or_default()
    }

    /// Receive-buffer overflows, if a filter was ever attached (its drops count in the
    /// sockets' own drop count, so they are taken out there); `None` otherwise.
    pub(crate) fn overflows(&self) -> Option<u64> {
        let filter = self.filter.as_ref()?;
        filter
            .overflows()
            .inspect_err(|error| tracing::warn!(%error, "socket drop counts unreadable"))
            .ok()
    }
}

fn fail_open(filter: &mut UnderlayFilter, error: &IoError) {
    tracing::error!(%error, "underlay filter detached: every datagram is checked in userspace from now on");
    if let Err(error) = filter.detach() {
        tracing::error!(%error, "underlay filter: detaching failed");
    }
}

/// A digest of what [`admissions`] would build, computed without allocating while the
/// switch is locked.
fn fingerprint(switch: &Switch) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for net in switch.networks() {
        let config = net.config();
        net.vni().get().hash(&mut hasher);
        (config.admission == Admission::Any).hash(&mut hasher);
        config.decap.strict_reserved.hash(&mut hasher);
        for ip in net.known_vteps() {
            ip.hash(&mut hasher);
        }
        // Marks the end of a network's VTEPs, so two networks cannot hash like one.
        u32::MAX.hash(&mut hasher);
    }
    hasher.finish()
}

/// What each network of `switch` asks of the filter.
fn admissions(switch: &Switch) -> BTreeMap<Vni, NetworkAdmission> {
    switch
        .networks()
        .map(|net| {
            let config = net.config();
            (
                net.vni(),
                NetworkAdmission {
                    admit_any: config.admission == Admission::Any,
                    strict_reserved: config.decap.strict_reserved,
                    vteps: net.known_vteps().collect(),
                },
            )
        })
        .collect()
}

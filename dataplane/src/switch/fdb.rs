//! The forwarding table of one network: MAC to remote VTEP, static or learned, with ageing
//! and a cap on learned entries (the kernel's `maxaddress`).
//!
//! Learning runs per frame, so it must not allocate: the map is sized up front to twice the
//! most entries it may hold. hashbrown then always has room to rehash in place when deletions
//! leave tombstones, instead of growing. Static entries are added by the control plane, which
//! may allocate. Time is an argument; the table never reads a clock.

use super::Timestamp;
use crate::tunnel::Vtep;
use crate::wire::MacAddr;
use std::collections::HashMap;

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Programmed by the control plane; never aged, moved or overridden by learning.
    Static,
    /// Learned from the source MAC of a decapsulated frame; ages out.
    Learned,
}

/// One forwarding entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    /// Where frames for this MAC go.
    pub vtep: Vtep,
    /// Static or learned.
    pub kind: EntryKind,
    /// When the entry was last created, refreshed or moved.
    pub updated: Timestamp,
}

/// What learning one source MAC did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnOutcome {
    /// A new learned entry.
    Learned,
    /// An existing learned entry behind the same VTEP, refreshed.
    Refreshed,
    /// An existing learned entry that now points at the new VTEP.
    Moved,
    /// A static entry for this MAC points at the same VTEP: nothing to do.
    Static,
    /// A static entry for this MAC points elsewhere: the frame is suspect; nothing changed.
    StaticConflict,
    /// The table holds its cap of learned entries; nothing changed.
    Full,
    /// Multicast, broadcast or all-zeros: never learned.
    NotUnicast,
}

/// Why a control-plane change to the table was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FdbError {
    /// `add` of a MAC that already has a static entry.
    #[error("{0} already has a static entry")]
    Exists(MacAddr),
    /// Multicast, broadcast or all-zeros MAC: they cannot have a single destination.
    #[error("{0} is not a unicast MAC")]
    NotUnicast(MacAddr),
}

/// Table shape and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbLimits {
    /// Most learned entries (at least 1).
    pub max_learned: usize,
    /// Learned entries older than this, in milliseconds, are gone.
    pub ageing_ms: u64,
}

/// MAC to VTEP for one network.
#[derive(Debug, Clone)]
pub struct ForwardingTable {
    entries: HashMap<MacAddr, FdbEntry, ahash::RandomState>,
    statics: usize,
    learned: usize,
    limits: FdbLimits,
}

impl ForwardingTable {
    /// An empty table with room for `limits.max_learned` learned entries, allocated now.
    pub fn new(limits: FdbLimits) -> ForwardingTable {
        let mut table = ForwardingTable {
            entries: HashMap::with_hasher(ahash::RandomState::new()),
            statics: 0,
            learned: 0,
            limits,
        };
        table.ensure_headroom();
        table
    }

    /// The limits in force.
    pub fn limits(&self) -> FdbLimits {
        self.limits
    }

    /// Keeps the map's capacity at twice the most entries it may hold (see the module docs).
    fn ensure_headroom(&mut self) {
        let want = 2 * (self.statics + self.limits.max_learned);
        if self.entries.capacity() < want {
            self.entries.reserve(want - self.entries.len());
        }
    }

    fn is_live(&self, entry: &FdbEntry, now: Timestamp) -> bool {
        entry.kind == EntryKind::Static || !self.expired(entry, now)
    }

    fn expired(&self, entry: &FdbEntry, now: Timestamp) -> bool {
        now.millis_since(entry.updated) >= self.limits.ageing_ms
    }

    /// The entry for `mac`, unless it is a learned entry that has aged out.
    pub fn lookup(&self, mac: &MacAddr, now: Timestamp) -> Option<&FdbEntry> {
        self.entries.get(mac).filter(|e| self.is_live(e, now))
    }

    /// The entry for `mac` regardless of age.
    pub fn get(&self, mac: &MacAddr) -> Option<&FdbEntry> {
        self.entries.get(mac)
    }

    /// Adds a static entry, like `bridge fdb add` (exclusive). A learned entry for the MAC is
    /// replaced by it. Returns the entry it replaced.
    pub fn add_static(
        &mut self,
        mac: MacAddr,
        vtep: Vtep,
        now: Timestamp,
    ) -> Result<Option<FdbEntry>, FdbError> {
        if self.get(&mac).is_some_and(|e| e.kind == EntryKind::Static) {
            return Err(FdbError::Exists(mac));
        }
        self.replace_static(mac, vtep, now)
    }

    /// Adds or replaces a static entry, like `bridge fdb replace`. Returns the previous entry.
    pub fn replace_static(
        &mut self,
        mac: MacAddr,
        vtep: Vtep,
        now: Timestamp,
    ) -> Result<Option<FdbEntry>, FdbError> {
        if !mac.is_unicast() {
            return Err(FdbError::NotUnicast(mac));
        }
        let entry = FdbEntry {
            vtep,
            kind: EntryKind::Static,
            updated: now,
        };
        let previous = self.entries.insert(mac, entry);
        self.forget(previous);
        self.statics += 1;
        self.ensure_headroom();
        Ok(previous)
    }

    /// Removes the entry for `mac`, static or learned.
    pub fn remove(&mut self, mac: &MacAddr) -> Option<FdbEntry> {
        let previous = self.entries.remove(mac);
        self.forget(previous);
        previous
    }

    fn forget(&mut self, previous: Option<FdbEntry>) {
        match previous.map(|e| e.kind) {
            Some(EntryKind::Static) => self.statics -= 1,
            Some(EntryKind::Learned) => self.learned -= 1,
            None => {}
        }
    }

    /// Learns that `mac` lives behind `vtep`. Like the kernel, entries are compared by
    /// underlay IP only: the sender's UDP source port is a flow hash, not an address.
    /// Never allocates.
    pub fn learn(&mut self, mac: MacAddr, vtep: Vtep, now: Timestamp) -> LearnOutcome {
        if !mac.is_unicast() {
            return LearnOutcome::NotUnicast;
        }
        let ageing_ms = self.limits.ageing_ms;
        if let Some(entry) = self.entries.get_mut(&mac) {
            return match entry.kind {
                EntryKind::Static if entry.vtep.ip == vtep.ip => LearnOutcome::Static,
                EntryKind::Static => LearnOutcome::StaticConflict,
                EntryKind::Learned => {
                    let stale = now.millis_since(entry.updated) >= ageing_ms;
                    let moved = entry.vtep.ip != vtep.ip;
                    entry.vtep = vtep;
                    entry.updated = now;
                    // An aged-out entry that comes back is new, wherever it was before.
                    match (stale, moved) {
                        (true, _) => LearnOutcome::Learned,
                        (false, true) => LearnOutcome::Moved,
                        (false, false) => LearnOutcome::Refreshed,
                    }
                }
            };
        }
        if self.learned >= self.limits.max_learned {
            return LearnOutcome::Full;
        }
        self.entries.insert(
            mac,
            FdbEntry {
                vtep,
                kind: EntryKind::Learned,
                updated: now,
            },
        );
        self.learned += 1;
        LearnOutcome::Learned
    }

    /// Removes learned entries that have aged out; returns how many.
    pub fn age(&mut self, now: Timestamp) -> usize {
        let ageing_ms = self.limits.ageing_ms;
        let before = self.entries.len();
        self.entries
            .retain(|_, e| e.kind == EntryKind::Static || now.millis_since(e.updated) < ageing_ms);
        let removed = before - self.entries.len();
        self.learned -= removed;
        removed
    }

    /// Every entry, in no particular order, aged-out learned entries included until `age`.
    pub fn iter(&self) -> impl Iterator<Item = (&MacAddr, &FdbEntry)> {
        self.entries.iter()
    }

    /// Number of learned entries (live or not yet swept).
    pub fn learned_len(&self) -> usize {
        self.learned
    }

    /// Number of static entries.
    pub fn static_len(&self) -> usize {
        self.statics
    }

    /// All entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Vni;
    use core::net::Ipv4Addr;

    fn vtep(last: u8) -> Vtep {
        Vtep {
            ip: Ipv4Addr::new(198, 18, 0, last),
            port: 4789,
            vni: Vni::new(42).unwrap(),
        }
    }

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0x42, b[0], b[1], b[2], b[3]])
    }

    fn table(max_learned: usize) -> ForwardingTable {
        ForwardingTable::new(FdbLimits {
            max_learned,
            ageing_ms: 300_000,
        })
    }

    const T0: Timestamp = Timestamp::from_millis(1_000);

    #[test]
    fn learn_refresh_move() {
        let mut t = table(10);
        assert_eq!(t.learn(mac(1), vtep(2), T0), LearnOutcome::Learned);
        assert_eq!(
            t.learn(mac(1), vtep(2), T0.add_millis(5)),
            LearnOutcome::Refreshed
        );
        assert_eq!(
            t.learn(mac(1), vtep(3), T0.add_millis(6)),
            LearnOutcome::Moved
        );
        assert_eq!(t.lookup(&mac(1), T0.add_millis(7)).unwrap().vtep, vtep(3));
        assert_eq!(t.learned_len(), 1);
    }

    #[test]
    fn static_entries_never_move() {
        let mut t = table(10);
        t.add_static(mac(1), vtep(2), T0).unwrap();
        assert_eq!(t.learn(mac(1), vtep(3), T0), LearnOutcome::StaticConflict);
        assert_eq!(t.learn(mac(1), vtep(2), T0), LearnOutcome::Static);
        let e = t.lookup(&mac(1), Timestamp::from_millis(u64::MAX)).unwrap();
        assert_eq!((e.vtep, e.kind), (vtep(2), EntryKind::Static));
        assert_eq!(t.age(Timestamp::from_millis(u64::MAX)), 0);
        assert_eq!(
            t.add_static(mac(1), vtep(4), T0),
            Err(FdbError::Exists(mac(1)))
        );
        assert_eq!(
            t.replace_static(mac(1), vtep(4), T0).unwrap().unwrap().vtep,
            vtep(2)
        );
        assert_eq!(t.static_len(), 1);
    }

    #[test]
    fn static_replaces_learned() {
        let mut t = table(10);
        t.learn(mac(1), vtep(2), T0);
        let prev = t.add_static(mac(1), vtep(3), T0).unwrap().unwrap();
        assert_eq!(prev.kind, EntryKind::Learned);
        assert_eq!((t.learned_len(), t.static_len()), (0, 1));
    }

    #[test]
    fn non_unicast_is_refused() {
        let mut t = table(10);
        for m in [
            MacAddr::ZERO,
            MacAddr::BROADCAST,
            "01:00:5e:00:00:01".parse().unwrap(),
        ] {
            assert_eq!(t.add_static(m, vtep(2), T0), Err(FdbError::NotUnicast(m)));
            assert_eq!(t.learn(m, vtep(2), T0), LearnOutcome::NotUnicast);
        }
        assert!(t.is_empty());
    }

    #[test]
    fn cap_refuses_and_ageing_frees() {
        let mut t = table(3);
        for n in 0..3 {
            assert_eq!(t.learn(mac(n), vtep(2), T0), LearnOutcome::Learned);
        }
        assert_eq!(t.learn(mac(9), vtep(2), T0), LearnOutcome::Full);
        // Static entries do not count against the cap.
        t.add_static(mac(100), vtep(2), T0).unwrap();
        assert_eq!(t.learned_len(), 3);
        let later = T0.add_millis(300_000);
        assert!(
            t.lookup(&mac(0), later).is_none(),
            "expired entries are not used"
        );
        assert!(t.lookup(&mac(0), T0.add_millis(299_999)).is_some());
        assert_eq!(t.age(later), 3);
        assert_eq!(t.learned_len(), 0);
        assert_eq!(t.learn(mac(9), vtep(2), later), LearnOutcome::Learned);
    }

    #[test]
    fn stale_entry_relearned_counts_as_new() {
        let mut t = table(3);
        t.learn(mac(1), vtep(2), T0);
        assert_eq!(
            t.learn(mac(1), vtep(3), T0.add_millis(300_000)),
            LearnOutcome::Learned
        );
        assert_eq!(t.learned_len(), 1);
    }
}

//! The underlay filter: an eBPF socket filter on the underlay sockets that drops, before they
//! leave the kernel, the datagrams the switch would refuse anyway on their outer headers alone,
//! so a flood of them costs no trip into userspace (issue 12).
//!
//! The program sees each datagram from its UDP header on (`skb->data`), and checks in the
//! order the switch does, counting each drop under the same reason:
//!
//! ```text
//!  UDP payload < 8 bytes                     -> truncated       (global)
//!  VXLAN I flag clear                        -> vni_flag_clear  (global)
//!  VNI not in `vnis`                         -> unknown_vni     (global)
//!  not admit-any and (VNI, source IP) not in `vteps`
//!                                            -> unknown_vtep    (the VNI's)
//!  strict and a reserved bit set             -> reserved_bits   (the VNI's)
//!  otherwise                                 -> kept, whole, for the switch to check again
//! ```
//!
//! Maps (keys and values in host byte order, as the packet loads give them):
//! - `vnis`: hash, VNI -> flags ([`ADMIT_ANY`], [`STRICT_RESERVED`]): the networks served.
//! - `vteps`: hash, (VNI, IPv4 source) -> 1: the VTEPs each network knows (its static fdb
//!   entries and flood list, as `switch::Network::known_vteps` says).
//! - `global`: array, one slot per global reason: datagrams and receive units dropped.
//! - `vni_drops`: hash, VNI -> datagrams and units dropped as unknown_vtep, reserved_bits.
//!
//! A receive unit is what the socket was offered: one datagram, or one UDP GRO train whose
//! datagrams count one by one (`gso_segs`), as `udp_rx_datagrams` counts them in userspace.
//!
//! Failures fail open: a VTEP the map cannot take turns its network to admit-any in the
//! kernel (the switch still refuses unknown VTEPs); a network the map cannot take is an error
//! for the runtime, which then detaches the filter. The filter is only ever a shortcut:
//! everything it keeps goes through the switch's full checks.
//!
//! [`UnderlayFilter::load`] is the start-up probe: it creates the maps, loads the program
//! and proves it runs by attaching it to a Unix datagram socket pair and sending it one
//! short datagram, which must vanish and be counted. A kernel that refuses any step (no
//! eBPF, no `SO_ATTACH_BPF`, EPERM) gives an error, and the runtime runs without it.

use super::ebpf::{
    Assembler, AND64_IMM, ATOMIC_ADD64, JA, JEQ_IMM, JGT_IMM, JNE_IMM, JSET_IMM, LDX_MEM_W,
    LD_ABS_W, MOV64_IMM, MOV64_REG, OR64_REG, R0, R1, R10, R6, RSH64_IMM, STX_MEM_W, ST_MEM_W,
};
use super::{sys, IoError, UdpSocket};
use crate::counters::{DropCounters, DropReason};
use crate::wire::Vni;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// `vnis` flag: the network admits any source (`admit any`).
pub(crate) const ADMIT_ANY: u32 = 1;
/// `vnis` flag: the network refuses datagrams with reserved bits set.
pub(crate) const STRICT_RESERVED: u32 = 2;

/// The global reasons, by their slot in the `global` array.
const GLOBAL_REASONS: [DropReason; 3] = [
    DropReason::Truncated,
    DropReason::VniFlagClear,
    DropReason::UnknownVni,
];
/// The per-network reasons, by their pair of counters in a `vni_drops` value.
const NETWORK_REASONS: [DropReason; 2] = [DropReason::UnknownVtep, DropReason::ReservedBits];

/// Most networks the filter serves; a link beyond them is refused by the map and the
/// runtime detaches the filter.
const MAX_NETWORKS: u32 = 16_384;
/// Most (network, VTEP) pairs; beyond them a network falls back to admit-any in the kernel.
const MAX_VTEPS: u32 = 65_536;

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// Offset of `len` in `struct __sk_buff`.
const SKB_LEN: i16 = 0;
/// Offset of `gso_segs` in `struct __sk_buff` (Linux 5.1+).
const SKB_GSO_SEGS: i16 = 164;
/// `SKF_NET_OFF`: packet loads from this base are relative to the network header.
const SKF_NET_OFF: i32 = -0x10_0000;
/// The VXLAN header's offset from the UDP header, where `skb->data` points.
const VXLAN: i32 = 8;
/// The I flag in the header's first word.
const I_FLAG: i32 = 0x0800_0000;

// Stack slots (offsets from r10): the VNI then the source IP, which together are a `vteps`
// key and alone a `vnis` or `vni_drops` key, and a `global` slot number.
const KEY_VNI: i16 = -8;
const KEY_IP: i16 = -4;
const KEY_SLOT: i16 = -12;

// Registers that live across packet loads and calls: r7 the length, then the reserved bits;
// r8 the receive unit's datagrams; r9 the network's flags.
const R7: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;

/// Jump targets of [`program`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Segments,
    Header,
    FlagSet,
    Served,
    Admitted,
    Strict,
    Pass,
}

/// The map fds a program is built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MapFds {
    vnis: i32,
    vteps: i32,
    global: i32,
    vni_drops: i32,
}

/// Counts one drop in `global` slot `slot` and ends the program, dropping the datagram.
fn drop_global(a: &mut Assembler<Label>, maps: MapFds, slot: i32) {
    a.op(ST_MEM_W, R10, 0, KEY_SLOT, slot);
    a.lookup(maps.global, KEY_SLOT);
    count_and_drop(a, 0);
}

/// Counts one drop in the VNI's `vni_drops` pair at byte `offset` and drops the datagram.
fn drop_network(a: &mut Assembler<Label>, maps: MapFds, offset: i16) {
    a.lookup(maps.vni_drops, KEY_VNI);
    count_and_drop(a, offset);
}

/// With r0 a counter pair or NULL: adds the datagrams and one unit, returns 0 (drop).
fn count_and_drop(a: &mut Assembler<Label>, offset: i16) {
    // A NULL value (a network removed a moment ago) skips the three counting instructions.
    a.op(JEQ_IMM, R0, 0, 3, 0);
    a.op(ATOMIC_ADD64, R0, R8, offset, 0);
    a.alu_imm(MOV64_IMM, R1, 1);
    a.op(ATOMIC_ADD64, R0, R1, offset + 8, 0);
    a.alu_imm(MOV64_IMM, R0, 0);
    a.exit();
}

/// The filter program, as `struct bpf_insn`s for `BPF_PROG_LOAD`, referring to `maps`.
fn program(maps: MapFds) -> Vec<[u8; 8]> {
    let mut a = Assembler::new();
    a.alu_reg(MOV64_REG, R6, R1);
    a.op(LDX_MEM_W, R7, R6, SKB_LEN, 0);
    a.op(LDX_MEM_W, R8, R6, SKB_GSO_SEGS, 0);
    a.jump(JNE_IMM, R8, 0, Label::Segments);
    a.alu_imm(MOV64_IMM, R8, 1);
    a.label(Label::Segments);
    // UDP header (8) plus VXLAN header (8).
    a.jump(JGT_IMM, R7, 15, Label::Header);
    drop_global(&mut a, maps, 0);

    a.label(Label::Header);
    a.load_abs(LD_ABS_W, VXLAN);
    a.alu_reg(MOV64_REG, R7, R0);
    a.jump(JSET_IMM, R7, I_FLAG, Label::FlagSet);
    drop_global(&mut a, maps, 1);

    a.label(Label::FlagSet);
    // Reserved: every flag but I, the three bytes after the flags and the last byte.
    a.alu_imm(AND64_IMM, R7, !I_FLAG);
    a.load_abs(LD_ABS_W, VXLAN + 4);
    a.alu_reg(MOV64_REG, R9, R0);
    a.alu_imm(AND64_IMM, R9, 0xff);
    a.alu_reg(OR64_REG, R7, R9);
    a.alu_imm(RSH64_IMM, R0, 8);
    a.op(STX_MEM_W, R10, R0, KEY_VNI, 0);
    a.load_abs(LD_ABS_W, SKF_NET_OFF + 12);
    a.op(STX_MEM_W, R10, R0, KEY_IP, 0);
    a.lookup(maps.vnis, KEY_VNI);
    a.jump(JNE_IMM, R0, 0, Label::Served);
    drop_global(&mut a, maps, 2);

    a.label(Label::Served);
    a.op(LDX_MEM_W, R9, R0, 0, 0);
    a.jump(JSET_IMM, R9, ADMIT_ANY as i32, Label::Admitted);
    a.lookup(maps.vteps, KEY_VNI);
    a.jump(JNE_IMM, R0, 0, Label::Admitted);
    drop_network(&mut a, maps, 0);

    a.label(Label::Admitted);
    a.jump(JSET_IMM, R9, STRICT_RESERVED as i32, Label::Strict);
    a.jump(JA, 0, 0, Label::Pass);
    a.label(Label::Strict);
    a.jump(JEQ_IMM, R7, 0, Label::Pass);
    drop_network(&mut a, maps, 16);

    a.label(Label::Pass);
    // Keep the whole datagram: the return value is the length to keep.
    a.op(LDX_MEM_W, R0, R6, SKB_LEN, 0);
    a.exit();
    a.finish()
}

/// What one network asks of the filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NetworkAdmission {
    /// `admit any`: every source passes.
    pub(crate) admit_any: bool,
    /// Reserved bits set are refused.
    pub(crate) strict_reserved: bool,
    /// The sources admitted when not `admit_any`.
    pub(crate) vteps: BTreeSet<Ipv4Addr>,
}

/// What the filter drops, by reason, since it was loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterDrops {
    /// Drops that belong to no network (truncated, I flag clear, unknown VNI).
    pub global: DropCounters,
    /// Each served network's drops (unknown VTEP, reserved bits).
    pub networks: HashMap<Vni, DropCounters>,
    /// Every datagram dropped, whatever the reason, removed networks' included.
    pub datagrams: u64,
    /// Receive units dropped: datagrams, or UDP GRO trains counted once; removed networks'
    /// included.
    pub units: u64,
}

/// The loaded filter program, its maps, and the sockets it is attached to.
#[derive(Debug)]
pub struct UnderlayFilter {
    program: OwnedFd,
    vnis: OwnedFd,
    vteps: OwnedFd,
    global: OwnedFd,
    vni_drops: OwnedFd,
    /// Copies of the sockets the program was attached to, to detach it and read their
    /// drop counts.
    sockets: Vec<OwnedFd>,
    /// Whether the program is on `sockets` (false once detached).
    attached: bool,
    /// What `vnis` holds.
    served: BTreeMap<Vni, u32>,
    /// What `vteps` holds.
    known: BTreeSet<(Vni, Ipv4Addr)>,
    /// Datagrams and receive units counted for networks since removed.
    retired: (u64, u64),
}

fn filter_error(step: &'static str) -> impl FnOnce(io::Error) -> IoError {
    move |source| IoError::UnderlayFilter {
        step,
        log: String::new(),
        source,
    }
}

fn vtep_key(vni: Vni, ip: Ipv4Addr) -> [u8; 8] {
    let mut key = [0; 8];
    key[..4].copy_from_slice(&vni.get().to_ne_bytes());
    key[4..].copy_from_slice(&u32::from(ip).to_ne_bytes());
    key
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_ne_bytes(word)
}

impl UnderlayFilter {
    /// Creates the maps, loads the program and proves the kernel runs it (see the module
    /// docs). This is the start-up probe.
    pub fn load() -> Result<UnderlayFilter, IoError> {
        let map = |step, map_type, key, value, max, flags| {
            sys::bpf_map_create(map_type, key, value, max, flags).map_err(filter_error(step))
        };
        let vnis = map(
            "creating map vnis",
            BPF_MAP_TYPE_HASH,
            4,
            4,
            MAX_NETWORKS,
            0,
        )?;
        let vteps = map(
            "creating map vteps",
            BPF_MAP_TYPE_HASH,
            8,
            4,
            MAX_VTEPS,
            sys::BPF_F_NO_PREALLOC,
        )?;
        let slots = u32::try_from(GLOBAL_REASONS.len()).unwrap_or(u32::MAX);
        let global = map("creating map global", BPF_MAP_TYPE_ARRAY, 4, 16, slots, 0)?;
        let vni_drops = map(
            "creating map vni_drops",
            BPF_MAP_TYPE_HASH,
            4,
            32,
            MAX_NETWORKS,
            0,
        )?;
        let insns = program(MapFds {
            vnis: vnis.as_raw_fd(),
            vteps: vteps.as_raw_fd(),
            global: global.as_raw_fd(),
            vni_drops: vni_drops.as_raw_fd(),
        });
        let program = sys::bpf_load_socket_filter(&insns, None).map_err(|source| {
            // Load again with a log, only to say why.
            let mut log = vec![0u8; 64 * 1024];
            let _ = sys::bpf_load_socket_filter(&insns, Some(&mut log));
            IoError::UnderlayFilter {
                step: "loading the program",
                log: super::last_log_line(&log),
                source,
            }
        })?;
        let filter = UnderlayFilter {
            program,
            vnis,
            vteps,
            global,
            vni_drops,
            sockets: Vec::new(),
            attached: false,
            served: BTreeMap::new(),
            known: BTreeSet::new(),
            retired: (0, 0),
        };
        filter.prove()?;
        Ok(filter)
    }

    /// Attaches the program to a Unix datagram pair and sends one byte through it: it must
    /// be dropped and counted as truncated. Then the count is cleared.
    fn prove(&self) -> Result<(), IoError> {
        let step = "proving the program runs";
        let (sender, receiver) =
            std::os::unix::net::UnixDatagram::pair().map_err(filter_error(step))?;
        sys::attach_socket_filter(receiver.as_fd(), self.program.as_fd())
            .map_err(filter_error("attaching the program (SO_ATTACH_BPF)"))?;
        receiver.set_nonblocking(true).map_err(filter_error(step))?;
        sender.send(&[0]).map_err(filter_error(step))?;
        let mut buf = [0u8; 1];
        let kept = match receiver.recv(&mut buf) {
            Ok(_) => true,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => false,
            Err(err) => return Err(filter_error(step)(err)),
        };
        let counted = self.global_slot(0).map_err(filter_error(step))?;
        if kept || counted != (1, 1) {
            return Err(filter_error(step)(io::Error::other(format!(
                "a 1-byte datagram was {} and counted {counted:?} (datagrams, units), not dropped and counted once",
                if kept { "kept" } else { "dropped" },
            ))));
        }
        sys::bpf_map_update(self.global.as_fd(), &0u32.to_ne_bytes(), &[0; 16], 0)
            .map_err(filter_error(step))
    }

    fn global_slot(&self, slot: u32) -> io::Result<(u64, u64)> {
        let mut value = [0u8; 16];
        sys::bpf_map_lookup(self.global.as_fd(), &slot.to_ne_bytes(), &mut value)?;
        Ok((u64_at(&value, 0), u64_at(&value, 8)))
    }

    /// Runs the filter on `socket` from now on.
    pub fn attach(&mut self, socket: &UdpSocket) -> Result<(), IoError> {
        let copy = socket
            .as_fd()
            .try_clone_to_owned()
            .map_err(filter_error("copying a socket fd"))?;
        sys::attach_socket_filter(copy.as_fd(), self.program.as_fd()).map_err(|source| {
            IoError::UnderlayFilter {
                step: "attaching the program (SO_ATTACH_BPF)",
                log: String::new(),
                source,
            }
        })?;
        self.sockets.push(copy);
        self.attached = true;
        Ok(())
    }

    /// Whether the program runs on the sockets (it was attached and not detached since).
    pub fn attached(&self) -> bool {
        self.attached
    }

    /// What the sockets dropped before userspace read them, for a full receive buffer:
    /// the kernel's drop count of each socket (which includes the filter's drops) less the
    /// receive units the filter dropped. Read in that order, a drop in flight can only make
    /// the result smaller, never count a filter drop as an overflow.
    pub fn overflows(&self) -> Result<u64, IoError> {
        let mut total = 0u64;
        for socket in &self.sockets {
            total += u64::from(
                sys::socket_drops(socket.as_fd()).map_err(filter_error("reading SO_MEMINFO"))?,
            );
        }
        Ok(total.saturating_sub(self.drops()?.units))
    }

    /// Takes the filter off every socket it is attached to: everything goes to userspace.
    /// Returns the first refusal, after trying every socket.
    pub fn detach(&mut self) -> Result<(), IoError> {
        self.attached = false;
        let mut first = Ok(());
        for socket in &self.sockets {
            if let Err(e) = sys::detach_socket_filter(socket.as_fd()) {
                if first.is_ok() {
                    first = Err(filter_error("detaching the program (SO_DETACH_BPF)")(e));
                }
            }
        }
        first
    }

    /// Brings the maps in line with `wanted`, the networks served and what each admits.
    /// Additions go in before removals, VTEPs before their network, so a datagram the
    /// switch would take is never dropped in between.
    ///
    /// # Errors
    ///
    /// A network the maps could not take or let go of; the caller should then
    /// [`detach`](Self::detach). A VTEP the map could not take is no error: its network
    /// admits any source in the kernel from then on (logged).
    pub(crate) fn sync(&mut self, wanted: &BTreeMap<Vni, NetworkAdmission>) -> Result<(), IoError> {
        let mut full = BTreeSet::new();
        for (&vni, admission) in wanted {
            if admission.admit_any {
                continue;
            }
            for &ip in &admission.vteps {
                if self.known.contains(&(vni, ip)) {
                    continue;
                }
                match sys::bpf_map_update(self.vteps.as_fd(), &vtep_key(vni, ip), &[1, 0, 0, 0], 0)
                {
                    Ok(()) => {
                        self.known.insert((vni, ip));
                    }
                    Err(error) => {
                        tracing::warn!(%vni, %ip, %error, "underlay filter: VTEP map refused an entry; the network admits any source in the kernel, the switch still checks");
                        full.insert(vni);
                    }
                }
            }
        }
        for (&vni, admission) in wanted {
            let mut flags = 0;
            if admission.admit_any || full.contains(&vni) {
                flags |= ADMIT_ANY;
            }
            if admission.strict_reserved {
                flags |= STRICT_RESERVED;
            }
            let key = vni.get().to_ne_bytes();
            match self.served.get(&vni) {
                Some(&old) if old == flags => continue,
                Some(_) => {}
                None => sys::bpf_map_update(self.vni_drops.as_fd(), &key, &[0; 32], 0)
                    .map_err(filter_error("adding a network to map vni_drops"))?,
            }
            sys::bpf_map_update(self.vnis.as_fd(), &key, &flags.to_ne_bytes(), 0)
                .map_err(filter_error("adding a network to map vnis"))?;
            self.served.insert(vni, flags);
        }
        let gone: Vec<Vni> = self
            .served
            .keys()
            .filter(|vni| !wanted.contains_key(vni))
            .copied()
            .collect();
        for vni in gone {
            let key = vni.get().to_ne_bytes();
            sys::bpf_map_delete(self.vnis.as_fd(), &key)
                .map_err(filter_error("removing a network from map vnis"))?;
            // Its counts leave with it, but the totals keep them (see `overflows`).
            let (datagrams, units, _) = self
                .network_drops(vni)
                .map_err(filter_error("reading the drop counters"))?;
            self.retired.0 += datagrams;
            self.retired.1 += units;
            sys::bpf_map_delete(self.vni_drops.as_fd(), &key)
                .map_err(filter_error("removing a network from map vni_drops"))?;
            self.served.remove(&vni);
        }
        let stale: Vec<(Vni, Ipv4Addr)> = self
            .known
            .iter()
            .filter(|(vni, ip)| {
                wanted
                    .get(vni)
                    .is_none_or(|a| a.admit_any || !a.vteps.contains(ip))
            })
            .copied()
            .collect();
        for (vni, ip) in stale {
            sys::bpf_map_delete(self.vteps.as_fd(), &vtep_key(vni, ip))
                .map_err(filter_error("removing a VTEP from map vteps"))?;
            self.known.remove(&(vni, ip));
        }
        Ok(())
    }

    /// The drops counted so far, for the networks served now.
    pub fn drops(&self) -> Result<FilterDrops, IoError> {
        let step = "reading the drop counters";
        let mut drops = FilterDrops::default();
        for (slot, &reason) in (0u32..).zip(GLOBAL_REASONS.iter()) {
            let (datagrams, units) = self.global_slot(slot).map_err(filter_error(step))?;
            drops.global.add(reason, datagrams);
            drops.datagrams += datagrams;
            drops.units += units;
        }
        for &vni in self.served.keys() {
            let (datagrams, units, counters) =
                self.network_drops(vni).map_err(filter_error(step))?;
            drops.networks.insert(vni, counters);
            drops.datagrams += datagrams;
            drops.units += units;
        }
        drops.datagrams += self.retired.0;
        drops.units += self.retired.1;
        Ok(drops)
    }

    /// One network's datagrams and units dropped, and its drops by reason.
    fn network_drops(&self, vni: Vni) -> io::Result<(u64, u64, DropCounters)> {
        let mut value = [0u8; 32];
        let mut counters = DropCounters::default();
        if !sys::bpf_map_lookup(self.vni_drops.as_fd(), &vni.get().to_ne_bytes(), &mut value)? {
            return Ok((0, 0, counters));
        }
        let (mut datagrams, mut units) = (0, 0);
        for (pair, &reason) in NETWORK_REASONS.iter().enumerate() {
            counters.add(reason, u64_at(&value, pair * 16));
            datagrams += u64_at(&value, pair * 16);
            units += u64_at(&value, pair * 16 + 8);
        }
        Ok((datagrams, units, counters))
    }
}

#[cfg(test)]
mod tests;

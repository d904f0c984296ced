//! A small eBPF assembler for the programs vxtap loads (the TAP's queue steering, the
//! underlay socket filter): `struct bpf_insn` encoding, the opcodes those programs use and
//! forward jumps to labels. It only builds instructions; loading happens in `sys`.

/// One `struct bpf_insn`: opcode, destination and source registers, offset, immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn to_bytes(self) -> [u8; 8] {
        let [o0, o1] = self.off.to_le_bytes();
        let [i0, i1, i2, i3] = self.imm.to_le_bytes();
        [
            self.code,
            self.dst | (self.src << 4),
            o0,
            o1,
            i0,
            i1,
            i2,
            i3,
        ]
    }
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
pub(crate) const LD_ABS_H: u8 = 0x28;
pub(crate) const LD_ABS_W: u8 = 0x20;
pub(crate) const LD_IND_W: u8 = 0x40;
pub(crate) const LD_IND_H: u8 = 0x48;
pub(crate) const LD_IND_B: u8 = 0x50;
/// `BPF_LD | BPF_IMM | BPF_DW`: a 64-bit immediate over two slots; with `src` 1
/// (`BPF_PSEUDO_MAP_FD`) the immediate is a map fd the kernel turns into the map's address.
pub(crate) const LD_IMM64: u8 = 0x18;
/// `BPF_LDX | BPF_MEM | BPF_W`: dst = *(u32 *)(src + off).
pub(crate) const LDX_MEM_W: u8 = 0x61;
/// `BPF_STX | BPF_MEM | BPF_W`: *(u32 *)(dst + off) = src.
pub(crate) const STX_MEM_W: u8 = 0x63;
/// `BPF_ST | BPF_MEM | BPF_W`: *(u32 *)(dst + off) = imm.
pub(crate) const ST_MEM_W: u8 = 0x62;
/// `BPF_STX | BPF_ATOMIC | BPF_DW` with imm `BPF_ADD` (the old `BPF_XADD`):
/// lock *(u64 *)(dst + off) += src.
pub(crate) const ATOMIC_ADD64: u8 = 0xdb;
pub(crate) const ADD64_IMM: u8 = 0x07;
pub(crate) const ADD64_REG: u8 = 0x0f;
pub(crate) const LSH64_IMM: u8 = 0x67;
pub(crate) const RSH64_IMM: u8 = 0x77;
pub(crate) const AND64_IMM: u8 = 0x57;
pub(crate) const OR64_REG: u8 = 0x4f;
pub(crate) const XOR64_REG: u8 = 0xaf;
pub(crate) const MOV64_IMM: u8 = 0xb7;
pub(crate) const MOV64_REG: u8 = 0xbf;
pub(crate) const MUL32_IMM: u8 = 0x24;
pub(crate) const RSH32_IMM: u8 = 0x74;
pub(crate) const MOV32_REG: u8 = 0xbc;
pub(crate) const JA: u8 = 0x05;
pub(crate) const JEQ_IMM: u8 = 0x15;
pub(crate) const JGT_IMM: u8 = 0x25;
pub(crate) const JNE_IMM: u8 = 0x55;
pub(crate) const JSET_IMM: u8 = 0x45;
pub(crate) const CALL: u8 = 0x85;
pub(crate) const EXIT: u8 = 0x95;

/// `bpf_map_lookup_elem(map, key)`: a pointer to the value, or NULL.
pub(crate) const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
/// `BPF_PSEUDO_MAP_FD`, the `src` of an `LD_IMM64` that names a map by fd.
const PSEUDO_MAP_FD: u8 = 1;

// Registers: r0 holds load and call results and the return value, r1-r5 call arguments
// (clobbered by calls and packet loads), r6-r9 survive both, r10 the frame pointer.
pub(crate) const R0: u8 = 0;
pub(crate) const R1: u8 = 1;
pub(crate) const R2: u8 = 2;
pub(crate) const R6: u8 = 6;
pub(crate) const R10: u8 = 10;

/// A straight-line assembler with forward jumps to labels of type `L`.
pub(crate) struct Assembler<L> {
    insns: Vec<Insn>,
    labels: Vec<(L, usize)>,
    jumps: Vec<(usize, L)>,
}

impl<L: Copy + Eq + std::fmt::Debug> Assembler<L> {
    pub(crate) fn new() -> Assembler<L> {
        Assembler {
            insns: Vec::new(),
            labels: Vec::new(),
            jumps: Vec::new(),
        }
    }

    pub(crate) fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            dst,
            src,
            off,
            imm,
        });
    }

    pub(crate) fn alu_imm(&mut self, code: u8, dst: u8, imm: i32) {
        self.op(code, dst, 0, 0, imm);
    }

    pub(crate) fn alu_reg(&mut self, code: u8, dst: u8, src: u8) {
        self.op(code, dst, src, 0, 0);
    }

    /// r0 = the big-endian value at packet offset `at`.
    pub(crate) fn load_abs(&mut self, code: u8, at: i32) {
        self.op(code, 0, 0, 0, at);
    }

    /// r0 = the big-endian value at packet offset `base + at`.
    pub(crate) fn load_ind(&mut self, code: u8, base: u8, at: i32) {
        self.op(code, 0, base, 0, at);
    }

    /// `dst` = the address of the map whose fd is `map`.
    pub(crate) fn load_map(&mut self, dst: u8, map: i32) {
        self.op(LD_IMM64, dst, PSEUDO_MAP_FD, 0, map);
        self.op(0, 0, 0, 0, 0);
    }

    /// r0 = `bpf_map_lookup_elem(map, r10 + key)`; clobbers r1-r5.
    pub(crate) fn lookup(&mut self, map: i32, key: i16) {
        self.load_map(R1, map);
        self.alu_reg(MOV64_REG, R2, R10);
        self.alu_imm(ADD64_IMM, R2, i32::from(key));
        self.op(CALL, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM);
    }

    pub(crate) fn exit(&mut self) {
        self.op(EXIT, 0, 0, 0, 0);
    }

    pub(crate) fn jump(&mut self, code: u8, dst: u8, imm: i32, to: L) {
        self.jumps.push((self.insns.len(), to));
        self.op(code, dst, 0, 0, imm);
    }

    pub(crate) fn label(&mut self, label: L) {
        self.labels.push((label, self.insns.len()));
    }

    /// The encoded program.
    ///
    /// # Panics
    ///
    /// If a jump goes to a label never placed, or backwards: bugs in the program builders,
    /// which their tests run.
    pub(crate) fn finish(mut self) -> Vec<[u8; 8]> {
        for &(at, to) in &self.jumps {
            let target = self
                .labels
                .iter()
                .find(|(label, _)| *label == to)
                .map(|&(_, target)| target)
                .unwrap_or_else(|| panic!("label {to:?} is never placed"));
            assert!(target > at, "jump to {to:?} goes backwards");
            self.insns[at].off = i16::try_from(target - at - 1).expect("short program");
        }
        self.insns.into_iter().map(Insn::to_bytes).collect()
    }
}

//! The decoded form of a guest instruction: what the decoder produces and the engine executes.

/// Register slot that absorbs writes to `x0`. The decoder maps an integer destination of x0 to
/// this slot, so the engine never has to special-case x0: slot 0 is never written and reads 0.
pub const X0_SINK: u8 = 32;

/// Every operation the hart executes. Compressed instructions decode to the same operations as
/// their 32-bit expansions (with `Inst::len() == 2`).
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// Not a valid instruction (or one this hart does not implement): illegal-instruction trap.
    Illegal = 0,
    // RV64I
    Lui,
    Auipc,
    Jal,
    Jalr,
    Beq,
    Bne,
    Blt,
    Bge,
    Bltu,
    Bgeu,
    Lb,
    Lh,
    Lw,
    Ld,
    Lbu,
    Lhu,
    Lwu,
    Sb,
    Sh,
    Sw,
    Sd,
    Addi,
    Slti,
    Sltiu,
    Xori,
    Ori,
    Andi,
    Slli,
    Srli,
    Srai,
    Add,
    Sub,
    Sll,
    Slt,
    Sltu,
    Xor,
    Srl,
    Sra,
    Or,
    And,
    Addiw,
    Slliw,
    Srliw,
    Sraiw,
    Addw,
    Subw,
    Sllw,
    Srlw,
    Sraw,
    Fence,
    /// Zihintpause `pause` (a FENCE encoding): a spin-wait hint, which ends the block so the
    /// run loop can give the host CPU away.
    Pause,
    FenceI,
    Ecall,
    Ebreak,
    // Privileged
    Sret,
    Mret,
    Wfi,
    SfenceVma,
    /// hfence.vvma / hfence.gvma / hlv / hlvx / hsv / hinval: virtual-instruction trap in V=1.
    HypervisorOnly,
    // Zicsr (imm = CSR number; for the *i forms rs1 holds the 5-bit immediate)
    Csrrw,
    Csrrs,
    Csrrc,
    Csrrwi,
    Csrrsi,
    Csrrci,
    // RV64M
    Mul,
    Mulh,
    Mulhsu,
    Mulhu,
    Div,
    Divu,
    Rem,
    Remu,
    Mulw,
    Divw,
    Divuw,
    Remw,
    Remuw,
    // RV64A (aq/rl are honoured by making every AMO sequentially consistent)
    LrW,
    ScW,
    AmoswapW,
    AmoaddW,
    AmoxorW,
    AmoandW,
    AmoorW,
    AmominW,
    AmomaxW,
    AmominuW,
    AmomaxuW,
    LrD,
    ScD,
    AmoswapD,
    AmoaddD,
    AmoxorD,
    AmoandD,
    AmoorD,
    AmominD,
    AmomaxD,
    AmominuD,
    AmomaxuD,
    // F
    Flw,
    Fsw,
    FmaddS,
    FmsubS,
    FnmsubS,
    FnmaddS,
    FaddS,
    FsubS,
    FmulS,
    FdivS,
    FsqrtS,
    FsgnjS,
    FsgnjnS,
    FsgnjxS,
    FminS,
    FmaxS,
    FcvtWS,
    FcvtWuS,
    FcvtLS,
    FcvtLuS,
    FmvXW,
    FeqS,
    FltS,
    FleS,
    FclassS,
    FcvtSW,
    FcvtSWu,
    FcvtSL,
    FcvtSLu,
    FmvWX,
    // D
    Fld,
    Fsd,
    FmaddD,
    FmsubD,
    FnmsubD,
    FnmaddD,
    FaddD,
    FsubD,
    FmulD,
    FdivD,
    FsqrtD,
    FsgnjD,
    FsgnjnD,
    FsgnjxD,
    FminD,
    FmaxD,
    FcvtSD,
    FcvtDS,
    FcvtWD,
    FcvtWuD,
    FcvtLD,
    FcvtLuD,
    FmvXD,
    FeqD,
    FltD,
    FleD,
    FclassD,
    FcvtDW,
    FcvtDWu,
    FcvtDL,
    FcvtDLu,
    FmvDX,
}

/// One decoded instruction (16 bytes, so a block of them streams through the cache well).
///
/// Register fields: `rd`/`rs1`/`rs2` are integer register numbers for integer operands and FP
/// register numbers for FP operands, per the instruction's definition. An integer `rd` of x0 is
/// stored as [`X0_SINK`]. `rs3` is the third FP source of the fused multiply-adds. `rm` is the
/// rounding-mode field of FP instructions (7 = dynamic), and for AMOs/LR/SC the aq/rl bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Inst {
    pub op: Op,
    pub rd: u8,
    pub rs1: u8,
    pub rs2: u8,
    pub rs3: u8,
    pub rm: u8,
    /// Byte offset of this instruction from the start of its block (filled by the block builder).
    pub off: u16,
    /// Sign-extended immediate: I/S/B/U/J immediates, shift amounts, CSR numbers.
    pub imm: i32,
    /// The raw instruction bits: 32-bit form, or the 16-bit compressed form zero-extended.
    pub raw: u32,
}

impl Inst {
    pub const ILLEGAL: Inst = Inst {
        op: Op::Illegal,
        rd: 0,
        rs1: 0,
        rs2: 0,
        rs3: 0,
        rm: 0,
        off: 0,
        imm: 0,
        raw: 0,
    };

    /// Length in bytes of the encoded instruction (2 for compressed, 4 otherwise).
    #[inline(always)]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        if self.raw & 3 == 3 {
            4
        } else {
            2
        }
    }

    /// Real destination register number (maps [`X0_SINK`] back to 0).
    pub fn rd_arch(&self) -> u8 {
        if self.rd == X0_SINK {
            0
        } else {
            self.rd
        }
    }

    /// Whether this instruction ends a decoded block: control transfer, or anything that can
    /// change translation, privilege, interrupt enables or the decoded-code state.
    pub fn ends_block(&self) -> bool {
        use Op::*;
        matches!(
            self.op,
            Illegal
                | Jal
                | Jalr
                | Beq
                | Bne
                | Blt
                | Bge
                | Bltu
                | Bgeu
                | Pause
                | FenceI
                | Ecall
                | Ebreak
                | Sret
                | Mret
                | Wfi
                | SfenceVma
                | HypervisorOnly
                | Csrrw
                | Csrrs
                | Csrrc
                | Csrrwi
                | Csrrsi
                | Csrrci
        )
    }

    /// For a Zicsr instruction: the CSR number, and whether it writes the CSR (CSRRS/CSRRC
    /// with `x0` and their immediate forms with 0 only read it).
    pub fn csr_access(&self) -> Option<(u16, bool)> {
        use Op::*;
        let writes = match self.op {
            Csrrw | Csrrwi => true,
            Csrrs | Csrrc | Csrrsi | Csrrci => self.rs1 != 0,
            _ => return None,
        };
        Some(((self.imm as u32 & 0xfff) as u16, writes))
    }

    /// Whether this is an RV64A instruction (LR, SC, AMO).
    pub fn is_atomic(&self) -> bool {
        use Op::*;
        matches!(
            self.op,
            LrW | ScW
                | AmoswapW
                | AmoaddW
                | AmoxorW
                | AmoandW
                | AmoorW
                | AmominW
                | AmomaxW
                | AmominuW
                | AmomaxuW
                | LrD
                | ScD
                | AmoswapD
                | AmoaddD
                | AmoxorD
                | AmoandD
                | AmoorD
                | AmominD
                | AmomaxD
                | AmominuD
                | AmomaxuD
        )
    }

    /// Whether this instruction may write guest memory (stores, SC, AMOs, FP stores).
    pub fn writes_memory(&self) -> bool {
        use Op::*;
        match self.op {
            Sb | Sh | Sw | Sd | Fsw | Fsd => true,
            LrW | LrD => false,
            _ => self.is_atomic(),
        }
    }
}

const _: () = assert!(std::mem::size_of::<Inst>() == 16);

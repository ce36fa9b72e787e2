//! Instruction decoder: raw RV64IMAFDC + Zicsr + Zifencei (+ the privileged and hypervisor
//! instructions the hart recognises) instruction bits to [`Inst`].
//!
//! Field conventions (the execution engine relies on them):
//!
//! * `rd`/`rs1`/`rs2` are integer or FP register numbers as the instruction defines them. An
//!   integer destination of x0 is stored as [`X0_SINK`]; an FP destination f0 stays 0.
//!   Instructions without a destination (stores, branches, fences, `ecall`, ...) have `rd = 0`.
//!   Fields that are not registers (the rs2 field selecting an `fcvt` variant, the unused fields
//!   of `fence`) are 0, except for [`Op::HypervisorOnly`], which keeps the raw rd/rs1/rs2 fields
//!   (rd still goes through the x0 sink for the `hlv`/`hlvx` loads).
//! * `imm` is the sign-extended immediate: I/S/B/J immediates, `imm[31:12] << 12` for `lui`
//!   and `auipc`, byte offsets for branches and jumps, the shift amount for shifts, the CSR
//!   number (zero-extended) for CSR instructions, and the fm/pred/succ field (I-immediate) for
//!   `fence`. For the `csrr*i` forms `rs1` holds the 5-bit zero-extended immediate.
//! * `rs3` is the third source of the fused multiply-adds. `rm` is the rounding-mode field of FP
//!   arithmetic, convert and fused multiply-add instructions (the reserved modes 5 and 6 decode to
//!   [`Op::Illegal`]); for LR/SC/AMOs it is `aq << 1 | rl`; otherwise 0.
//! * Compressed instructions decode to their 32-bit expansion, with `raw` holding only the
//!   16-bit parcel so [`Inst::len`] is 2. HINT encodings decode to the operation they are
//!   written as (they have no architectural effect, or write only the x0 sink).
//! * `off` is always 0 (the block builder fills it in).

use super::inst::{Inst, Op, X0_SINK};

/// Zihintpause `pause`: `fence w, 0`.
const PAUSE: u32 = 0x0100_000f;

/// Decode one fetched instruction word.
///
/// If `raw & 3 != 3` the instruction is a 16-bit compressed one in the low half of `raw`, and
/// the upper half is ignored. Anything this hart does not implement, or any reserved encoding,
/// decodes to [`Op::Illegal`] (with `raw` set, so the trap value can be reported).
pub fn decode(raw: u32) -> Inst {
    if raw & 3 != 3 {
        let parcel = raw & 0xffff;
        decode_compressed(parcel).unwrap_or(Inst {
            raw: parcel,
            ..Inst::ILLEGAL
        })
    } else {
        decode_32(raw).unwrap_or(Inst {
            raw,
            ..Inst::ILLEGAL
        })
    }
}

/// Sign-extend the low `width` bits of `value`.
#[inline(always)]
fn sext(value: u32, width: u32) -> i32 {
    let shift = 32 - width;
    ((value << shift) as i32) >> shift
}

/// Destination register number for an integer destination (x0 becomes the sink).
#[inline(always)]
fn xd(reg: u32) -> u8 {
    if reg == 0 {
        X0_SINK
    } else {
        reg as u8
    }
}

/// Rounding-mode field `rm`, if it is not one of the reserved values 5 and 6.
#[inline(always)]
fn valid_rm(rm: u32) -> Option<u8> {
    match rm {
        5 | 6 => None,
        _ => Some(rm as u8),
    }
}

// ---------------------------------------------------------------------------------------------
// 32-bit instructions
// ---------------------------------------------------------------------------------------------

/// The fixed fields of a 32-bit instruction.
#[derive(Clone, Copy)]
struct Fields {
    raw: u32,
    rd: u32,
    funct3: u32,
    rs1: u32,
    rs2: u32,
    funct7: u32,
}

impl Fields {
    fn new(raw: u32) -> Fields {
        Fields {
            raw,
            rd: (raw >> 7) & 31,
            funct3: (raw >> 12) & 7,
            rs1: (raw >> 15) & 31,
            rs2: (raw >> 20) & 31,
            funct7: raw >> 25,
        }
    }

    fn imm_i(self) -> i32 {
        (self.raw as i32) >> 20
    }

    fn imm_s(self) -> i32 {
        (((self.raw as i32) >> 25) << 5) | self.rd as i32
    }

    fn imm_b(self) -> i32 {
        let r = self.raw;
        (((r as i32) >> 31) << 12)
            | (((r >> 7) & 1) << 11) as i32
            | (((r >> 25) & 0x3f) << 5) as i32
            | (((r >> 8) & 0xf) << 1) as i32
    }

    fn imm_u(self) -> i32 {
        (self.raw & 0xffff_f000) as i32
    }

    fn imm_j(self) -> i32 {
        let r = self.raw;
        (((r as i32) >> 31) << 20)
            | (r & 0x000f_f000) as i32
            | (((r >> 20) & 1) << 11) as i32
            | (((r >> 21) & 0x3ff) << 1) as i32
    }

    /// An instruction with no fields set but `op` and `raw`.
    fn bare(self, op: Op) -> Inst {
        Inst {
            op,
            raw: self.raw,
            ..Inst::ILLEGAL
        }
    }

    /// Integer destination, `rs1`, `rs2` and `imm` (R/I-type with an integer rd).
    fn xrd(self, op: Op, rs2: u32, imm: i32) -> Inst {
        Inst {
            rd: xd(self.rd),
            rs1: self.rs1 as u8,
            rs2: rs2 as u8,
            imm,
            ..self.bare(op)
        }
    }

    /// No destination: `rs1`, `rs2` and `imm` (S/B-type).
    fn nord(self, op: Op, imm: i32) -> Inst {
        Inst {
            rs1: self.rs1 as u8,
            rs2: self.rs2 as u8,
            imm,
            ..self.bare(op)
        }
    }
}

fn decode_32(raw: u32) -> Option<Inst> {
    use Op::*;
    let f = Fields::new(raw);
    let inst = match raw & 0x7f {
        0x37 => Inst {
            rd: xd(f.rd),
            imm: f.imm_u(),
            ..f.bare(Lui)
        },
        0x17 => Inst {
            rd: xd(f.rd),
            imm: f.imm_u(),
            ..f.bare(Auipc)
        },
        0x6f => Inst {
            rd: xd(f.rd),
            imm: f.imm_j(),
            ..f.bare(Jal)
        },
        0x67 if f.funct3 == 0 => f.xrd(Jalr, 0, f.imm_i()),
        0x63 => {
            let op = match f.funct3 {
                0 => Beq,
                1 => Bne,
                4 => Blt,
                5 => Bge,
                6 => Bltu,
                7 => Bgeu,
                _ => return None,
            };
            f.nord(op, f.imm_b())
        }
        0x03 => {
            let op = match f.funct3 {
                0 => Lb,
                1 => Lh,
                2 => Lw,
                3 => Ld,
                4 => Lbu,
                5 => Lhu,
                6 => Lwu,
                _ => return None,
            };
            f.xrd(op, 0, f.imm_i())
        }
        0x23 => {
            let op = match f.funct3 {
                0 => Sb,
                1 => Sh,
                2 => Sw,
                3 => Sd,
                _ => return None,
            };
            f.nord(op, f.imm_s())
        }
        0x13 => decode_op_imm(f)?,
        0x1b => decode_op_imm_32(f)?,
        0x33 => decode_op(f)?,
        0x3b => decode_op_32(f)?,
        0x0f => match f.funct3 {
            // pred=W, succ=0, fm=0, rs1=rd=x0: the one FENCE encoding Zihintpause names.
            0 if f.raw == PAUSE => f.bare(Pause),
            // Reserved fm/pred/succ settings (and the unused rd/rs1 fields) are ordinary fences.
            0 => Inst {
                imm: f.imm_i(),
                ..f.bare(Fence)
            },
            // The imm/rs1/rd fields of FENCE.I are reserved and ignored.
            1 => f.bare(FenceI),
            _ => return None,
        },
        0x73 => decode_system(f)?,
        0x2f => decode_amo(f)?,
        0x07 => {
            let op = match f.funct3 {
                2 => Flw,
                3 => Fld,
                _ => return None,
            };
            Inst {
                rd: f.rd as u8,
                rs1: f.rs1 as u8,
                imm: f.imm_i(),
                ..f.bare(op)
            }
        }
        0x27 => {
            let op = match f.funct3 {
                2 => Fsw,
                3 => Fsd,
                _ => return None,
            };
            f.nord(op, f.imm_s())
        }
        0x43 | 0x47 | 0x4b | 0x4f => decode_fma(f)?,
        0x53 => decode_op_fp(f)?,
        _ => return None,
    };
    Some(inst)
}

fn decode_op_imm(f: Fields) -> Option<Inst> {
    use Op::*;
    let shamt = ((f.raw >> 20) & 0x3f) as i32;
    let inst = match f.funct3 {
        0 => f.xrd(Addi, 0, f.imm_i()),
        2 => f.xrd(Slti, 0, f.imm_i()),
        3 => f.xrd(Sltiu, 0, f.imm_i()),
        4 => f.xrd(Xori, 0, f.imm_i()),
        6 => f.xrd(Ori, 0, f.imm_i()),
        7 => f.xrd(Andi, 0, f.imm_i()),
        1 if f.raw >> 26 == 0 => f.xrd(Slli, 0, shamt),
        5 if f.raw >> 26 == 0 => f.xrd(Srli, 0, shamt),
        5 if f.raw >> 26 == 0b01_0000 => f.xrd(Srai, 0, shamt),
        _ => return None,
    };
    Some(inst)
}

fn decode_op_imm_32(f: Fields) -> Option<Inst> {
    use Op::*;
    // The W shifts take a 5-bit shamt; shamt[5] is part of funct7, so it must be 0 here.
    let shamt = f.rs2 as i32;
    let inst = match (f.funct3, f.funct7) {
        (0, _) => f.xrd(Addiw, 0, f.imm_i()),
        (1, 0) => f.xrd(Slliw, 0, shamt),
        (5, 0) => f.xrd(Srliw, 0, shamt),
        (5, 0b010_0000) => f.xrd(Sraiw, 0, shamt),
        _ => return None,
    };
    Some(inst)
}

fn decode_op(f: Fields) -> Option<Inst> {
    use Op::*;
    let op = match (f.funct7, f.funct3) {
        (0, 0) => Add,
        (0x20, 0) => Sub,
        (0, 1) => Sll,
        (0, 2) => Slt,
        (0, 3) => Sltu,
        (0, 4) => Xor,
        (0, 5) => Srl,
        (0x20, 5) => Sra,
        (0, 6) => Or,
        (0, 7) => And,
        (1, 0) => Mul,
        (1, 1) => Mulh,
        (1, 2) => Mulhsu,
        (1, 3) => Mulhu,
        (1, 4) => Div,
        (1, 5) => Divu,
        (1, 6) => Rem,
        (1, 7) => Remu,
        _ => return None,
    };
    Some(f.xrd(op, f.rs2, 0))
}

fn decode_op_32(f: Fields) -> Option<Inst> {
    use Op::*;
    let op = match (f.funct7, f.funct3) {
        (0, 0) => Addw,
        (0x20, 0) => Subw,
        (0, 1) => Sllw,
        (0, 5) => Srlw,
        (0x20, 5) => Sraw,
        (1, 0) => Mulw,
        (1, 4) => Divw,
        (1, 5) => Divuw,
        (1, 6) => Remw,
        (1, 7) => Remuw,
        _ => return None,
    };
    Some(f.xrd(op, f.rs2, 0))
}

fn decode_system(f: Fields) -> Option<Inst> {
    use Op::*;
    let inst = match f.funct3 {
        0 => match f.raw {
            0x0000_0073 => f.bare(Ecall),
            0x0010_0073 => f.bare(Ebreak),
            0x1020_0073 => f.bare(Sret),
            0x3020_0073 => f.bare(Mret),
            0x1050_0073 => f.bare(Wfi),
            _ if f.rd != 0 => return None,
            _ => match f.funct7 {
                0b000_1001 => f.nord(SfenceVma, 0),
                // hfence.vvma, hfence.gvma, hinval.vvma, hinval.gvma
                0b001_0001 | 0b011_0001 | 0b001_0011 | 0b011_0011 => f.nord(HypervisorOnly, 0),
                _ => return None,
            },
        },
        4 => {
            let valid = match f.funct7 {
                // hlv.b, hlv.bu
                0b011_0000 => matches!(f.rs2, 0 | 1),
                // hlv.h, hlv.hu, hlvx.hu; hlv.w, hlv.wu, hlvx.wu
                0b011_0010 | 0b011_0100 => matches!(f.rs2, 0 | 1 | 3),
                // hlv.d
                0b011_0110 => f.rs2 == 0,
                // hsv.b, hsv.h, hsv.w, hsv.d
                0b011_0001 | 0b011_0011 | 0b011_0101 | 0b011_0111 => f.rd == 0,
                _ => false,
            };
            if !valid {
                return None;
            }
            if f.funct7 & 1 == 1 {
                // hsv.*: no destination
                f.nord(HypervisorOnly, 0)
            } else {
                f.xrd(HypervisorOnly, f.rs2, 0)
            }
        }
        _ => {
            let op = match f.funct3 {
                1 => Csrrw,
                2 => Csrrs,
                3 => Csrrc,
                5 => Csrrwi,
                6 => Csrrsi,
                _ => Csrrci,
            };
            f.xrd(op, 0, (f.raw >> 20) as i32)
        }
    };
    Some(inst)
}

fn decode_amo(f: Fields) -> Option<Inst> {
    use Op::*;
    let double = match f.funct3 {
        2 => false,
        3 => true,
        _ => return None,
    };
    let (w, d) = match f.raw >> 27 {
        0b00010 if f.rs2 == 0 => (LrW, LrD),
        0b00011 => (ScW, ScD),
        0b00001 => (AmoswapW, AmoswapD),
        0b00000 => (AmoaddW, AmoaddD),
        0b00100 => (AmoxorW, AmoxorD),
        0b01100 => (AmoandW, AmoandD),
        0b01000 => (AmoorW, AmoorD),
        0b10000 => (AmominW, AmominD),
        0b10100 => (AmomaxW, AmomaxD),
        0b11000 => (AmominuW, AmominuD),
        0b11100 => (AmomaxuW, AmomaxuD),
        _ => return None,
    };
    let op = if double { d } else { w };
    Some(Inst {
        rm: ((f.raw >> 25) & 3) as u8,
        ..f.xrd(op, f.rs2, 0)
    })
}

fn decode_fma(f: Fields) -> Option<Inst> {
    use Op::*;
    let double = match f.funct7 & 3 {
        0 => false,
        1 => true,
        _ => return None,
    };
    let (s, d) = match f.raw & 0x7f {
        0x43 => (FmaddS, FmaddD),
        0x47 => (FmsubS, FmsubD),
        0x4b => (FnmsubS, FnmsubD),
        _ => (FnmaddS, FnmaddD),
    };
    Some(Inst {
        rd: f.rd as u8,
        rs1: f.rs1 as u8,
        rs2: f.rs2 as u8,
        rs3: (f.raw >> 27) as u8,
        rm: valid_rm(f.funct3)?,
        ..f.bare(if double { d } else { s })
    })
}

fn decode_op_fp(f: Fields) -> Option<Inst> {
    use Op::*;
    // Shapes of the OP-FP instructions.
    let fp3 = |op: Op, rs2: u32| -> Option<Inst> {
        let rm = valid_rm(f.funct3)?;
        Some(Inst {
            rd: f.rd as u8,
            rs1: f.rs1 as u8,
            rs2: rs2 as u8,
            rm,
            ..f.bare(op)
        })
    };
    let fp_no_rm = |op: Op| Inst {
        rd: f.rd as u8,
        rs1: f.rs1 as u8,
        rs2: f.rs2 as u8,
        ..f.bare(op)
    };
    let to_int = |op: Op, rm: u8| Inst {
        rd: xd(f.rd),
        rs1: f.rs1 as u8,
        rm,
        ..f.bare(op)
    };
    let cmp = |op: Op| Inst {
        rs2: f.rs2 as u8,
        ..to_int(op, 0)
    };

    let inst = match f.funct7 {
        0x00 => fp3(FaddS, f.rs2)?,
        0x01 => fp3(FaddD, f.rs2)?,
        0x04 => fp3(FsubS, f.rs2)?,
        0x05 => fp3(FsubD, f.rs2)?,
        0x08 => fp3(FmulS, f.rs2)?,
        0x09 => fp3(FmulD, f.rs2)?,
        0x0c => fp3(FdivS, f.rs2)?,
        0x0d => fp3(FdivD, f.rs2)?,
        0x2c if f.rs2 == 0 => fp3(FsqrtS, 0)?,
        0x2d if f.rs2 == 0 => fp3(FsqrtD, 0)?,
        0x20 if f.rs2 == 1 => fp3(FcvtSD, 0)?,
        0x21 if f.rs2 == 0 => fp3(FcvtDS, 0)?,
        0x10 | 0x11 => {
            let op = match (f.funct7 & 1, f.funct3) {
                (0, 0) => FsgnjS,
                (0, 1) => FsgnjnS,
                (0, 2) => FsgnjxS,
                (1, 0) => FsgnjD,
                (1, 1) => FsgnjnD,
                (1, 2) => FsgnjxD,
                _ => return None,
            };
            fp_no_rm(op)
        }
        0x14 | 0x15 => {
            let op = match (f.funct7 & 1, f.funct3) {
                (0, 0) => FminS,
                (0, 1) => FmaxS,
                (1, 0) => FminD,
                (1, 1) => FmaxD,
                _ => return None,
            };
            fp_no_rm(op)
        }
        0x50 | 0x51 => {
            let op = match (f.funct7 & 1, f.funct3) {
                (0, 0) => FleS,
                (0, 1) => FltS,
                (0, 2) => FeqS,
                (1, 0) => FleD,
                (1, 1) => FltD,
                (1, 2) => FeqD,
                _ => return None,
            };
            cmp(op)
        }
        0x60 | 0x61 => {
            let op = match (f.funct7 & 1, f.rs2) {
                (0, 0) => FcvtWS,
                (0, 1) => FcvtWuS,
                (0, 2) => FcvtLS,
                (0, 3) => FcvtLuS,
                (1, 0) => FcvtWD,
                (1, 1) => FcvtWuD,
                (1, 2) => FcvtLD,
                (1, 3) => FcvtLuD,
                _ => return None,
            };
            to_int(op, valid_rm(f.funct3)?)
        }
        0x68 | 0x69 => {
            let op = match (f.funct7 & 1, f.rs2) {
                (0, 0) => FcvtSW,
                (0, 1) => FcvtSWu,
                (0, 2) => FcvtSL,
                (0, 3) => FcvtSLu,
                (1, 0) => FcvtDW,
                (1, 1) => FcvtDWu,
                (1, 2) => FcvtDL,
                (1, 3) => FcvtDLu,
                _ => return None,
            };
            fp3(op, 0)?
        }
        0x70 | 0x71 if f.rs2 == 0 => {
            let op = match (f.funct7 & 1, f.funct3) {
                (0, 0) => FmvXW,
                (0, 1) => FclassS,
                (1, 0) => FmvXD,
                (1, 1) => FclassD,
                _ => return None,
            };
            to_int(op, 0)
        }
        0x78 if f.rs2 == 0 && f.funct3 == 0 => fp_no_rm(FmvWX),
        0x79 if f.rs2 == 0 && f.funct3 == 0 => fp_no_rm(FmvDX),
        _ => return None,
    };
    Some(inst)
}

// ---------------------------------------------------------------------------------------------
// 16-bit (RVC) instructions, RV64 flavour
// ---------------------------------------------------------------------------------------------

/// Decode a compressed instruction (`c` holds the 16-bit parcel) to its 32-bit expansion.
fn decode_compressed(c: u32) -> Option<Inst> {
    use Op::*;
    let mk = |op: Op, rd: u8, rs1: u8, rs2: u8, imm: i32| Inst {
        op,
        rd,
        rs1,
        rs2,
        imm,
        raw: c,
        ..Inst::ILLEGAL
    };
    let funct3 = c >> 13;
    // Full-width rd/rs1 (bits 11:7) and rs2 (bits 6:2).
    let r_hi = (c >> 7) & 31;
    let r_lo = (c >> 2) & 31;
    // Three-bit register fields: rs1'/rd' in bits 9:7, rs2'/rd' in bits 4:2.
    let rp_hi = (8 + ((c >> 7) & 7)) as u8;
    let rp_lo = (8 + ((c >> 2) & 7)) as u8;
    // imm[5] in bit 12, imm[4:0] in bits 6:2 (c.addi, c.li, c.andi, ...), sign-extended.
    let imm6 = sext((((c >> 12) & 1) << 5) | r_lo, 6);
    // The same bits as an unsigned shift amount.
    let shamt = ((((c >> 12) & 1) << 5) | r_lo) as i32;
    // Offsets of the register-based loads/stores (quadrant 0).
    let off_w = (((c >> 10) & 7) << 3) | (((c >> 6) & 1) << 2) | (((c >> 5) & 1) << 6);
    let off_d = (((c >> 10) & 7) << 3) | (((c >> 5) & 3) << 6);

    let inst = match (c & 3, funct3) {
        // ---- Quadrant 0 ----
        (0, 0) => {
            // c.addi4spn; nzuimm = 0 (which includes the all-zero parcel) is reserved.
            let nzuimm = (((c >> 11) & 3) << 4)
                | (((c >> 7) & 0xf) << 6)
                | (((c >> 6) & 1) << 2)
                | (((c >> 5) & 1) << 3);
            if nzuimm == 0 {
                return None;
            }
            mk(Addi, rp_lo, 2, 0, nzuimm as i32)
        }
        (0, 1) => mk(Fld, rp_lo, rp_hi, 0, off_d as i32),
        (0, 2) => mk(Lw, rp_lo, rp_hi, 0, off_w as i32),
        (0, 3) => mk(Ld, rp_lo, rp_hi, 0, off_d as i32),
        (0, 5) => mk(Fsd, 0, rp_hi, rp_lo, off_d as i32),
        (0, 6) => mk(Sw, 0, rp_hi, rp_lo, off_w as i32),
        (0, 7) => mk(Sd, 0, rp_hi, rp_lo, off_d as i32),

        // ---- Quadrant 1 ----
        // c.addi (c.nop when rd = 0); rd = 0 with imm != 0 and imm = 0 with rd != 0 are HINTs.
        (1, 0) => mk(Addi, xd(r_hi), r_hi as u8, 0, imm6),
        (1, 1) => {
            // c.addiw; rd = 0 is reserved.
            if r_hi == 0 {
                return None;
            }
            mk(Addiw, r_hi as u8, r_hi as u8, 0, imm6)
        }
        // c.li; rd = 0 is a HINT.
        (1, 2) => mk(Addi, xd(r_hi), 0, 0, imm6),
        (1, 3) if r_hi == 2 => {
            // c.addi16sp; nzimm = 0 is reserved.
            let nzimm = sext(
                (((c >> 12) & 1) << 9)
                    | (((c >> 6) & 1) << 4)
                    | (((c >> 5) & 1) << 6)
                    | (((c >> 3) & 3) << 7)
                    | (((c >> 2) & 1) << 5),
                10,
            );
            if nzimm == 0 {
                return None;
            }
            mk(Addi, 2, 2, 0, nzimm)
        }
        (1, 3) => {
            // c.lui; nzimm = 0 is reserved, rd = 0 is a HINT.
            if imm6 == 0 {
                return None;
            }
            mk(Lui, xd(r_hi), 0, 0, imm6 << 12)
        }
        (1, 4) => {
            let rd = rp_hi;
            match (c >> 10) & 3 {
                // c.srli / c.srai: shamt[5] = 1 is legal on RV64; shamt = 0 is a HINT.
                0 => mk(Srli, rd, rd, 0, shamt),
                1 => mk(Srai, rd, rd, 0, shamt),
                2 => mk(Andi, rd, rd, 0, imm6),
                _ => {
                    let op = match ((c >> 12) & 1, (c >> 5) & 3) {
                        (0, 0) => Sub,
                        (0, 1) => Xor,
                        (0, 2) => Or,
                        (0, 3) => And,
                        (1, 0) => Subw,
                        (1, 1) => Addw,
                        _ => return None,
                    };
                    mk(op, rd, rd, rp_lo, 0)
                }
            }
        }
        (1, 5) => {
            // c.j
            let off = (((c >> 12) & 1) << 11)
                | (((c >> 11) & 1) << 4)
                | (((c >> 9) & 3) << 8)
                | (((c >> 8) & 1) << 10)
                | (((c >> 7) & 1) << 6)
                | (((c >> 6) & 1) << 7)
                | (((c >> 3) & 7) << 1)
                | (((c >> 2) & 1) << 5);
            mk(Jal, X0_SINK, 0, 0, sext(off, 12))
        }
        (1, _) => {
            // c.beqz / c.bnez
            let off = (((c >> 12) & 1) << 8)
                | (((c >> 10) & 3) << 3)
                | (((c >> 5) & 3) << 6)
                | (((c >> 3) & 3) << 1)
                | (((c >> 2) & 1) << 5);
            let op = if funct3 == 6 { Beq } else { Bne };
            mk(op, 0, rp_hi, 0, sext(off, 9))
        }

        // ---- Quadrant 2 ----
        // c.slli; rd = 0 and shamt = 0 are HINTs.
        (2, 0) => mk(Slli, xd(r_hi), r_hi as u8, 0, shamt),
        (2, 1) | (2, 3) => {
            // c.fldsp / c.ldsp (c.ldsp with rd = 0 is reserved)
            let off = (((c >> 12) & 1) << 5) | (((c >> 5) & 3) << 3) | (((c >> 2) & 7) << 6);
            if funct3 == 1 {
                mk(Fld, r_hi as u8, 2, 0, off as i32)
            } else if r_hi == 0 {
                return None;
            } else {
                mk(Ld, r_hi as u8, 2, 0, off as i32)
            }
        }
        (2, 2) => {
            // c.lwsp; rd = 0 is reserved.
            let off = (((c >> 12) & 1) << 5) | (((c >> 4) & 7) << 2) | (((c >> 2) & 3) << 6);
            if r_hi == 0 {
                return None;
            }
            mk(Lw, r_hi as u8, 2, 0, off as i32)
        }
        (2, 4) => match ((c >> 12) & 1, r_hi, r_lo) {
            // c.jr; rs1 = 0 is reserved.
            (0, 0, 0) => return None,
            (0, rs1, 0) => mk(Jalr, X0_SINK, rs1 as u8, 0, 0),
            // c.mv; rd = 0 is a HINT.
            (0, rd, rs2) => mk(Add, xd(rd), 0, rs2 as u8, 0),
            (1, 0, 0) => mk(Ebreak, 0, 0, 0, 0),
            // c.jalr
            (1, rs1, 0) => mk(Jalr, 1, rs1 as u8, 0, 0),
            // c.add; rd = 0 is a HINT.
            (_, rd, rs2) => mk(Add, xd(rd), rd as u8, rs2 as u8, 0),
        },
        (2, 5) | (2, 7) => {
            // c.fsdsp / c.sdsp
            let off = (((c >> 10) & 7) << 3) | (((c >> 7) & 7) << 6);
            let op = if funct3 == 5 { Fsd } else { Sd };
            mk(op, 0, 2, r_lo as u8, off as i32)
        }
        (2, 6) => {
            // c.swsp
            let off = (((c >> 9) & 0xf) << 2) | (((c >> 7) & 3) << 6);
            mk(Sw, 0, 2, r_lo as u8, off as i32)
        }

        // Quadrant 0 funct3 = 4 is reserved; quadrant 3 is not a compressed instruction.
        _ => return None,
    };
    Some(inst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Op::*;

    const Z: u8 = X0_SINK;

    fn rtype(funct7: u32, rs2: u32, rs1: u32, funct3: u32, rd: u32, opcode: u32) -> u32 {
        (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode
    }

    fn itype(imm: i32, rs1: u32, funct3: u32, rd: u32, opcode: u32) -> u32 {
        ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode
    }

    fn stype(imm: i32, rs2: u32, rs1: u32, funct3: u32, opcode: u32) -> u32 {
        let imm = imm as u32;
        rtype((imm >> 5) & 0x7f, rs2, rs1, funct3, imm & 31, opcode)
    }

    /// Compiled regions re-check their page's code only after instructions that may write
    /// memory, so every store-like instruction must say so (and loads must not).
    #[test]
    fn writes_memory_covers_every_store_form() {
        let amo = |funct5: u32, funct3: u32| rtype(funct5 << 2, 11, 12, funct3, 10, 0x2f);
        let writes = [
            stype(8, 11, 10, 0, 0x23), // sb
            stype(8, 11, 10, 3, 0x23), // sd
            stype(8, 1, 10, 2, 0x27),  // fsw
            stype(8, 1, 10, 3, 0x27),  // fsd
            amo(0b00011, 2),           // sc.w
            amo(0b00011, 3),           // sc.d
            amo(0b00001, 2),           // amoswap.w
            amo(0b11100, 3),           // amomaxu.d
        ];
        for raw in writes {
            let i = decode(raw);
            assert!(i.writes_memory(), "{raw:#010x} decoded as {:?}", i.op);
        }
        let reads = [
            itype(8, 10, 3, 11, 0x03),               // ld
            itype(8, 10, 2, 1, 0x07),                // flw
            rtype(0b00010 << 2, 0, 12, 2, 10, 0x2f), // lr.w
            rtype(0, 3, 2, 7, 1, 0x53),              // fadd.s
        ];
        for raw in reads {
            let i = decode(raw);
            assert_ne!(i.op, Illegal, "{raw:#010x}");
            assert!(!i.writes_memory(), "{raw:#010x} decoded as {:?}", i.op);
        }
    }

    fn btype(imm: i32, rs2: u32, rs1: u32, funct3: u32) -> u32 {
        let imm = imm as u32;
        let hi = (((imm >> 12) & 1) << 6) | ((imm >> 5) & 0x3f);
        let lo = (((imm >> 1) & 0xf) << 1) | ((imm >> 11) & 1);
        rtype(hi, rs2, rs1, funct3, lo, 0x63)
    }

    fn jtype(imm: i32, rd: u32) -> u32 {
        let imm = imm as u32;
        let bits = (((imm >> 20) & 1) << 19)
            | (((imm >> 1) & 0x3ff) << 9)
            | (((imm >> 11) & 1) << 8)
            | ((imm >> 12) & 0xff);
        (bits << 12) | (rd << 7) | 0x6f
    }

    /// Encode the 32-bit form of an instruction a compressed parcel can expand to.
    fn encode_expansion(inst: &Inst) -> u32 {
        let rd = u32::from(inst.rd_arch());
        let (rs1, rs2, imm) = (u32::from(inst.rs1), u32::from(inst.rs2), inst.imm);
        match inst.op {
            Addi => itype(imm, rs1, 0, rd, 0x13),
            Andi => itype(imm, rs1, 7, rd, 0x13),
            Slli => itype(imm, rs1, 1, rd, 0x13),
            Srli => itype(imm, rs1, 5, rd, 0x13),
            Srai => itype(imm | 0x400, rs1, 5, rd, 0x13),
            Addiw => itype(imm, rs1, 0, rd, 0x1b),
            Lw => itype(imm, rs1, 2, rd, 0x03),
            Ld => itype(imm, rs1, 3, rd, 0x03),
            Fld => itype(imm, rs1, 3, rd, 0x07),
            Jalr => itype(imm, rs1, 0, rd, 0x67),
            Sw => stype(imm, rs2, rs1, 2, 0x23),
            Sd => stype(imm, rs2, rs1, 3, 0x23),
            Fsd => stype(imm, rs2, rs1, 3, 0x27),
            Beq => btype(imm, rs2, rs1, 0),
            Bne => btype(imm, rs2, rs1, 1),
            Add => rtype(0, rs2, rs1, 0, rd, 0x33),
            Sub => rtype(0x20, rs2, rs1, 0, rd, 0x33),
            Xor => rtype(0, rs2, rs1, 4, rd, 0x33),
            Or => rtype(0, rs2, rs1, 6, rd, 0x33),
            And => rtype(0, rs2, rs1, 7, rd, 0x33),
            Addw => rtype(0, rs2, rs1, 0, rd, 0x3b),
            Subw => rtype(0x20, rs2, rs1, 0, rd, 0x3b),
            Lui => (imm as u32 & 0xffff_f000) | (rd << 7) | 0x37,
            Jal => jtype(imm, rd),
            Ebreak => 0x0010_0073,
            other => panic!("{other:?} is not a compressed expansion"),
        }
    }

    /// Ops whose destination is an integer register (so rd must never be 0).
    fn writes_int_rd(op: Op) -> bool {
        matches!(
            op,
            Addi | Addiw | Andi | Slli | Srli | Srai | Lw | Ld | Jalr | Jal | Lui
        ) || matches!(op, Add | Sub | Xor | Or | And | Addw | Subw)
    }

    fn fields(inst: Inst) -> (Op, u8, u8, u8, i32) {
        (inst.op, inst.rd, inst.rs1, inst.rs2, inst.imm)
    }

    #[test]
    fn decode_every_16bit_value() {
        let mut legal = 0;
        for v in 0..=0xffffu32 {
            let d = decode(v);
            assert_eq!(d.off, 0);
            assert_eq!(decode(d.raw), d, "{v:#06x}: decoding raw again");
            if v & 3 == 3 {
                // The low half of a 32-bit word; it must simply not panic.
                assert_eq!(d.raw, v);
                continue;
            }
            assert_eq!(d.raw, v, "{v:#06x}: raw");
            assert_eq!(
                decode(v | 0x5a5a_0000),
                d,
                "{v:#06x}: upper half must be ignored"
            );
            assert_eq!(
                decode(v | 0xffff_0000),
                d,
                "{v:#06x}: upper half must be ignored"
            );
            assert_eq!(d.len(), 2);
            if d.op == Illegal {
                assert_eq!(
                    d,
                    Inst {
                        raw: v,
                        ..Inst::ILLEGAL
                    }
                );
                continue;
            }
            legal += 1;
            assert!(d.rd <= 32 && d.rs1 < 32 && d.rs2 < 32, "{v:#06x}: {d:?}");
            assert_eq!((d.rs3, d.rm), (0, 0), "{v:#06x}: {d:?}");
            if writes_int_rd(d.op) {
                assert_ne!(d.rd, 0, "{v:#06x}: integer x0 destination not sunk: {d:?}");
            } else if d.op != Fld {
                assert_eq!(d.rd, 0, "{v:#06x}: no destination: {d:?}");
            }
            // The 32-bit expansion decodes to exactly the same operation.
            let word = encode_expansion(&d);
            let long = decode(word);
            assert_eq!(
                long,
                Inst { raw: word, ..d },
                "{v:#06x}: expansion {word:#010x}"
            );
            assert_eq!(long.len(), 4);
        }
        // 49152 compressed parcels, of which 2409 are reserved: 2048 in quadrant 0 funct3 = 4,
        // 8 c.addi4spn with nzuimm = 0, 64 c.addiw x0, 1 c.addi16sp 0, 31 c.lui 0, 128 in the
        // reserved c.subw/c.addw neighbourhood, 64 c.lwsp x0, 64 c.ldsp x0, 1 c.jr x0.
        assert_eq!(legal, 49152 - 2409);
    }

    #[test]
    fn reserved_16bit_encodings_are_illegal() {
        for &c in &[
            0x0000u32, // all-zero parcel (c.addi4spn x8, 0)
            0x0004,    // c.addi4spn x9, 0
            0x8000,    // quadrant 0, funct3 = 4
            0x9ffc,    // quadrant 0, funct3 = 4
            0x2001,    // c.addiw x0, 0
            0x307d,    // c.addiw x0, -1
            0x6101,    // c.addi16sp 0
            0x6081,    // c.lui x1, 0
            0x6001,    // c.lui x0, 0
            0x6f81,    // c.lui x31, 0
            0x9c41,    // c.subw/c.addw space, funct2 = 2
            0x9c61,    // funct2 = 3
            0x9ffd,    // funct2 = 3 with x15, x15
            0x4002,    // c.lwsp x0
            0x507e,    // c.lwsp x0, 252
            0x6002,    // c.ldsp x0
            0x8002,    // c.jr x0
        ] {
            let d = decode(c);
            assert_eq!(
                d,
                Inst {
                    raw: c,
                    ..Inst::ILLEGAL
                },
                "{c:#06x}"
            );
            assert_eq!(d.len(), 2);
            // Whatever is in the upper half, raw is the 16-bit parcel.
            assert_eq!(decode(c | 0xdead_0000), d, "{c:#06x}");
        }
    }

    #[test]
    fn compressed_hints_decode_as_their_operation() {
        let cases: &[(u32, Op, u8, u8, u8, i32)] = &[
            (0x0015, Addi, Z, 0, 0, 5),   // c.nop 5
            (0x1001, Addi, Z, 0, 0, -32), // c.nop -32
            (0x0081, Addi, 1, 1, 0, 0),   // c.addi x1, 0
            (0x4015, Addi, Z, 0, 0, 5),   // c.li x0, 5
            (0x6005, Lui, Z, 0, 0, 4096), // c.lui x0, 1
            (0x8006, Add, Z, 0, 1, 0),    // c.mv x0, x1
            (0x9006, Add, Z, 0, 1, 0),    // c.add x0, x1
            (0x0006, Slli, Z, 0, 0, 1),   // c.slli x0, 1
            (0x0082, Slli, 1, 1, 0, 0),   // c.slli x1, 0
            (0x8001, Srli, 8, 8, 0, 0),   // c.srli x8, 0
            (0x8401, Srai, 8, 8, 0, 0),   // c.srai x8, 0
            (0x1006, Slli, Z, 0, 0, 33),  // c.slli x0, 33
        ];
        for &(c, op, rd, rs1, rs2, imm) in cases {
            assert_eq!(fields(decode(c)), (op, rd, rs1, rs2, imm), "{c:#06x}");
        }
    }

    #[test]
    fn reserved_32bit_encodings_are_illegal() {
        let mut words = vec![
            // Encodings longer than 32 bits (bits 4:2 = 7) and non-standard opcodes.
            0x0000_001f,
            0x0000_003f,
            0x0000_005f,
            0x0000_007f,
            0xffff_ffff,
            0x0000_000b, // custom-0
            0x0000_002b, // custom-1
            0x0000_0057, // OP-V
            0x0000_005b, // custom-2
            0x0000_006b, // reserved
            0x0000_0077, // reserved
            0x0000_007b, // custom-3
            // SYSTEM, funct3 = 0: only the exact encodings.
            0x0000_00f3, // ecall with rd = 1
            0x0000_8073, // ecall with rs1 = 1
            0x0011_0073, // ebreak with rs1 = 2
            0x0020_0073, // uret
            0x7b20_0073, // dret
            0x1020_00f3, // sret with rd = 1
            0x3020_8073, // mret with rs1 = 1
            0x1050_0173, // wfi with rd = 2
            0x1040_0073, // funct7 = 0x08, rs2 = 4
            0x1800_0073, // sfence.w.inval (Svinval, not implemented)
            0x1810_0073, // sfence.inval.ir
        ];
        words.extend([
            itype(0, 1, 1, 1, 0x67), // jalr funct3 = 1
            itype(0, 1, 4, 1, 0x67),
            btype(8, 1, 2, 2), // branch funct3 = 2
            btype(8, 1, 2, 3),
            itype(0, 1, 7, 1, 0x03), // load funct3 = 7
            stype(0, 1, 2, 4, 0x23), // store funct3 = 4..7
            stype(0, 1, 2, 7, 0x23),
            itype(0x040, 1, 1, 1, 0x13),   // slli with funct6 = 000001
            itype(0x400, 1, 1, 1, 0x13),   // "srai" funct6 on slli
            itype(0x041, 1, 5, 1, 0x13),   // srli funct6 = 000001
            itype(0x440, 1, 5, 1, 0x13),   // funct6 = 010001
            itype(0xc00, 1, 5, 1, 0x13),   // funct6 = 110000
            itype(0x020, 1, 1, 1, 0x1b),   // slliw with shamt[5] = 1
            itype(0x020, 1, 5, 1, 0x1b),   // srliw with shamt[5] = 1
            itype(0x420, 1, 5, 1, 0x1b),   // sraiw with shamt[5] = 1
            itype(0x400, 1, 1, 1, 0x1b),   // slliw with funct7 = 0x20
            itype(0x200, 1, 5, 1, 0x1b),   // srliw with funct7 = 0x10
            rtype(0x02, 3, 2, 0, 1, 0x33), // OP funct7 = 2
            rtype(0x20, 3, 2, 1, 1, 0x33), // sub-like funct7 on sll
            rtype(0x20, 3, 2, 7, 1, 0x33),
            rtype(0x40, 3, 2, 0, 1, 0x33),
            rtype(0x05, 3, 2, 1, 1, 0x33), // Zbc clmul
            rtype(0x04, 3, 2, 0, 1, 0x3b), // Zba add.uw
            rtype(0x10, 3, 2, 2, 1, 0x33), // Zba sh1add
            rtype(0x01, 3, 2, 1, 1, 0x3b), // OP-32 M, funct3 = 1..3
            rtype(0x01, 3, 2, 2, 1, 0x3b),
            rtype(0x01, 3, 2, 3, 1, 0x3b),
            rtype(0x20, 3, 2, 1, 1, 0x3b),
            rtype(0x00, 3, 2, 2, 1, 0x3b),
            itype(0, 1, 2, 0, 0x0f), // MISC-MEM funct3 = 2 (cbo.*)
            itype(0, 1, 7, 0, 0x0f),
            rtype(0x09, 2, 1, 0, 1, 0x73), // sfence.vma with rd = 1
            rtype(0x0b, 2, 1, 0, 0, 0x73), // sinval.vma
            rtype(0x11, 2, 1, 0, 1, 0x73), // hfence.vvma with rd = 1
            rtype(0x31, 2, 1, 0, 5, 0x73), // hfence.gvma with rd = 5
            rtype(0x7f, 0, 0, 0, 0, 0x73),
            rtype(0x30, 2, 1, 4, 1, 0x73), // hlv.b with rs2 = 2
            rtype(0x30, 3, 1, 4, 1, 0x73), // "hlvx.bu"
            rtype(0x36, 1, 1, 4, 1, 0x73), // "hlv.du"
            rtype(0x36, 3, 1, 4, 1, 0x73), // "hlvx.du"
            rtype(0x32, 2, 1, 4, 1, 0x73),
            rtype(0x31, 2, 1, 4, 1, 0x73),  // hsv.b with rd = 1
            rtype(0x37, 2, 1, 4, 31, 0x73), // hsv.d with rd = 31
            rtype(0x38, 0, 1, 4, 1, 0x73),  // unknown funct7
            rtype(0x00, 0, 1, 4, 1, 0x73),
            rtype(0x00, 2, 1, 0, 3, 0x2f),  // AMO funct3 = 0
            rtype(0x00, 2, 1, 4, 3, 0x2f),  // AMO funct3 = 4 (amoadd.q)
            rtype(0x08, 1, 2, 2, 3, 0x2f),  // lr.w with rs2 = 1
            rtype(0x0b, 31, 2, 3, 3, 0x2f), // lr.d.aqrl with rs2 = 31
            rtype(0x14, 2, 1, 2, 3, 0x2f),  // funct5 = 00101 (amocas)
            rtype(0x7c, 2, 1, 3, 3, 0x2f),  // funct5 = 11111
            rtype(0x24, 2, 1, 2, 3, 0x2f),  // funct5 = 01001
            itype(0, 1, 1, 1, 0x07),        // flh
            itype(0, 1, 4, 1, 0x07),        // flq
            itype(0, 1, 0, 1, 0x07),
            stype(0, 1, 2, 1, 0x27),               // fsh
            stype(0, 1, 2, 4, 0x27),               // fsq
            rtype((4 << 2) | 2, 3, 2, 7, 1, 0x43), // fmadd.h
            rtype((4 << 2) | 3, 3, 2, 7, 1, 0x4f), // fnmadd.q
            rtype(4 << 2, 3, 2, 5, 1, 0x47),       // fmsub.s rm = 5
            rtype((4 << 2) | 1, 3, 2, 6, 1, 0x4b), // fnmsub.d rm = 6
            rtype(0x02, 3, 2, 7, 1, 0x53),         // fadd.h
            rtype(0x03, 3, 2, 7, 1, 0x53),         // fadd.q
            rtype(0x00, 3, 2, 5, 1, 0x53),         // fadd.s rm = 5
            rtype(0x0d, 3, 2, 6, 1, 0x53),         // fdiv.d rm = 6
            rtype(0x2c, 1, 2, 7, 1, 0x53),         // fsqrt.s with rs2 = 1
            rtype(0x2d, 0, 2, 5, 1, 0x53),         // fsqrt.d rm = 5
            rtype(0x10, 3, 2, 3, 1, 0x53),         // fsgnj.s funct3 = 3
            rtype(0x11, 3, 2, 7, 1, 0x53),
            rtype(0x14, 3, 2, 2, 1, 0x53), // fmin.s funct3 = 2
            rtype(0x15, 3, 2, 3, 1, 0x53),
            rtype(0x50, 3, 2, 3, 1, 0x53), // feq.s funct3 = 3
            rtype(0x51, 3, 2, 4, 1, 0x53),
            rtype(0x60, 4, 2, 7, 1, 0x53), // fcvt.w.s rs2 = 4
            rtype(0x61, 0, 2, 5, 1, 0x53), // fcvt.w.d rm = 5
            rtype(0x68, 4, 2, 7, 1, 0x53), // fcvt.s.w rs2 = 4
            rtype(0x69, 3, 2, 6, 1, 0x53), // fcvt.d.lu rm = 6
            rtype(0x20, 0, 2, 7, 1, 0x53), // fcvt.s.s
            rtype(0x20, 2, 2, 7, 1, 0x53), // fcvt.s.h
            rtype(0x20, 3, 2, 7, 1, 0x53), // fcvt.s.q
            rtype(0x21, 1, 2, 7, 1, 0x53), // fcvt.d.d
            rtype(0x21, 0, 2, 5, 1, 0x53), // fcvt.d.s rm = 5
            rtype(0x22, 0, 2, 7, 1, 0x53), // fcvt.h.s
            rtype(0x70, 0, 2, 2, 1, 0x53), // fmv.x.w funct3 = 2
            rtype(0x70, 1, 2, 0, 1, 0x53), // fmv.x.w rs2 = 1
            rtype(0x71, 1, 2, 1, 1, 0x53), // fclass.d rs2 = 1
            rtype(0x78, 0, 2, 1, 1, 0x53), // fmv.w.x funct3 = 1
            rtype(0x79, 1, 2, 0, 1, 0x53), // fmv.d.x rs2 = 1 (fli.d)
            rtype(0x7c, 0, 2, 0, 1, 0x53),
        ]);
        for w in words {
            assert_eq!(
                decode(w),
                Inst {
                    raw: w,
                    ..Inst::ILLEGAL
                },
                "{w:#010x}"
            );
        }
    }

    #[test]
    fn immediates_round_trip() {
        for imm in -2048..=2047 {
            let i = decode(itype(imm, 3, 0, 4, 0x13));
            assert_eq!(fields(i), (Addi, 4, 3, 0, imm));
            let s = decode(stype(imm, 5, 6, 3, 0x23));
            assert_eq!(fields(s), (Sd, 0, 6, 5, imm));
            let b = decode(btype(imm * 2, 7, 8, 5));
            assert_eq!(fields(b), (Bge, 0, 8, 7, imm * 2));
            let csr = decode(itype(imm, 9, 2, 10, 0x73));
            assert_eq!(fields(csr), (Csrrs, 10, 9, 0, imm & 0xfff));
        }
        for k in 0..=20 {
            for imm in [1 << k, -(1 << k), (1 << k) - 2] {
                let imm = (imm & 0x1f_fffe) << 11 >> 11;
                let j = decode(jtype(imm, 0));
                assert_eq!(fields(j), (Jal, Z, 0, 0, imm), "jal {imm}");
            }
        }
        for k in 12..32 {
            let imm = (1u32 << k) as i32;
            let u = decode((imm as u32) | (31 << 7) | 0x17);
            assert_eq!(fields(u), (Auipc, 31, 0, 0, imm));
        }
    }

    #[test]
    fn x0_destinations_use_the_sink() {
        // An integer x0 destination is sunk; an FP f0 destination is not; no-destination
        // instructions have rd = 0.
        assert_eq!(decode(itype(0, 0, 0, 0, 0x13)).rd, Z); // nop
        assert_eq!(decode(itype(4, 1, 3, 0, 0x03)).rd, Z); // ld x0, 4(x1)
        assert_eq!(decode(itype(0x300, 1, 2, 0, 0x73)).rd, Z); // csrr with rd = x0
        assert_eq!(decode(rtype(0x70, 0, 1, 0, 0, 0x53)).rd, Z); // fmv.x.w x0, f1
        assert_eq!(decode(rtype(0x51, 2, 1, 2, 0, 0x53)).rd, Z); // feq.d x0, f1, f2
        assert_eq!(decode(rtype(0x08, 0, 1, 2, 0, 0x2f)).rd, Z); // lr.w x0, (x1)
        assert_eq!(decode(itype(0, 1, 3, 0, 0x07)).rd, 0); // fld f0, 0(x1)
        assert_eq!(decode(rtype(0x00, 2, 1, 7, 0, 0x53)).rd, 0); // fadd.s f0, f1, f2
        assert_eq!(decode(rtype(0x78, 0, 1, 0, 0, 0x53)).rd, 0); // fmv.w.x f0, x1
        assert_eq!(decode(stype(0, 1, 2, 3, 0x23)).rd, 0); // sd
        assert_eq!(decode(btype(4, 1, 2, 0)).rd, 0); // beq
    }
}

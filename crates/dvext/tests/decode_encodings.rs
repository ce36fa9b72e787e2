//! Decoder tests against the GNU binutils for riscv64 (`riscv64-linux-gnu-as`, `-ld`,
//! `-objcopy`, `-objdump`): assembled instruction lists with hand-written expectations, and
//! cross-checks of the decoder against the disassembler over the whole 16-bit space and a large
//! sample of 32-bit words. The tools are required: if they are missing the tests fail.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use dvext::hart::decode::decode;
use dvext::hart::inst::{Inst, Op, X0_SINK};

const AS: &str = "riscv64-linux-gnu-as";
const LD: &str = "riscv64-linux-gnu-ld";
const OBJCOPY: &str = "riscv64-linux-gnu-objcopy";
const OBJDUMP: &str = "riscv64-linux-gnu-objdump";

/// ISA for the uncompressed lists (no C, so nothing gets compressed behind our back).
const MARCH_G: &str = "rv64imafd_zicsr_zifencei";
/// ISA for the compressed lists and the disassembler cross-checks.
const MARCH_GC: &str = "rv64imafdc_zicsr_zifencei";
/// ISA for the hypervisor / Svinval instructions.
const MARCH_H: &str = "rv64imafd_zicsr_zifencei_h_svinval";
/// ISA for the 32-bit disassembler cross-check (so objdump knows the H instructions).
const MARCH_HC: &str = "rv64imafdc_zicsr_zifencei_h_svinval";

/// The x0 sink, short.
const Z: u8 = X0_SINK;

// ---------------------------------------------------------------------------------------------
// Tool plumbing
// ---------------------------------------------------------------------------------------------

fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `{tool}`: {e}. The decoder tests need GNU binutils for riscv64 \
             (Debian/Ubuntu: `apt-get install binutils-riscv64-linux-gnu`)."
        )
    });
    assert!(
        out.status.success(),
        "`{tool} {}` failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("decode-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch directory");
    dir
}

/// Assemble `src` for `march` and link it at 0, so every PC-relative field is resolved by the
/// tools rather than left to a relocation. Returns the path of the linked ELF.
fn assemble_elf(name: &str, march: &str, src: &str) -> PathBuf {
    let dir = scratch(name);
    let s = dir.join("t.s");
    let o = dir.join("t.o");
    let elf = dir.join("t.elf");
    std::fs::write(&s, src).expect("write assembly source");
    let march = format!("-march={march}");
    run(
        AS,
        &[
            &march,
            "-mno-relax",
            "-o",
            o.to_str().unwrap(),
            s.to_str().unwrap(),
        ],
    );
    run(
        LD,
        &[
            "--no-relax",
            "-Ttext=0",
            "-e",
            "0",
            "-o",
            elf.to_str().unwrap(),
            o.to_str().unwrap(),
        ],
    );
    elf
}

/// Assemble `src` and return the bytes of its `.text`.
fn assemble(name: &str, march: &str, src: &str) -> Vec<u8> {
    let elf = assemble_elf(name, march, src);
    let bin = elf.with_extension("bin");
    run(
        OBJCOPY,
        &[
            "-O",
            "binary",
            "-j",
            ".text",
            elf.to_str().unwrap(),
            bin.to_str().unwrap(),
        ],
    );
    std::fs::read(&bin).expect("read objcopy output")
}

// ---------------------------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------------------------

/// The fields of an [`Inst`] that the decoder is responsible for (everything but `raw`/`off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Exp {
    op: Op,
    rd: u8,
    rs1: u8,
    rs2: u8,
    rs3: u8,
    rm: u8,
    imm: i32,
}

const fn e(op: Op) -> Exp {
    Exp {
        op,
        rd: 0,
        rs1: 0,
        rs2: 0,
        rs3: 0,
        rm: 0,
        imm: 0,
    }
}

/// Register-register form.
const fn r(op: Op, rd: u8, rs1: u8, rs2: u8) -> Exp {
    Exp {
        rd,
        rs1,
        rs2,
        ..e(op)
    }
}

/// Register-immediate form (also loads, jalr, CSRs).
const fn i(op: Op, rd: u8, rs1: u8, imm: i32) -> Exp {
    Exp {
        rd,
        rs1,
        imm,
        ..e(op)
    }
}

/// No destination: stores and branches.
const fn s(op: Op, rs1: u8, rs2: u8, imm: i32) -> Exp {
    Exp {
        rs1,
        rs2,
        imm,
        ..e(op)
    }
}

impl Exp {
    const fn rm(self, rm: u8) -> Exp {
        Exp { rm, ..self }
    }
    const fn rs3(self, rs3: u8) -> Exp {
        Exp { rs3, ..self }
    }
    fn of(inst: &Inst) -> Exp {
        Exp {
            op: inst.op,
            rd: inst.rd,
            rs1: inst.rs1,
            rs2: inst.rs2,
            rs3: inst.rs3,
            rm: inst.rm,
            imm: inst.imm,
        }
    }
}

const ILLEGAL: Exp = e(Op::Illegal);

/// Assemble `list` (one instruction per entry, each `width` bytes) and check every decode.
fn check_list(name: &str, march: &str, prologue: &str, width: usize, list: &[(&str, Exp)]) {
    let mut src = String::from(prologue);
    for (asm, _) in list {
        writeln!(src, "{asm}").unwrap();
    }
    let bytes = assemble(name, march, &src);
    assert_eq!(
        bytes.len(),
        width * list.len(),
        "{name}: assembled size does not match {} instructions of {width} bytes",
        list.len()
    );
    let mut failures = String::new();
    for (k, (asm, want)) in list.iter().enumerate() {
        let chunk = &bytes[k * width..(k + 1) * width];
        let word = if width == 2 {
            u32::from(u16::from_le_bytes([chunk[0], chunk[1]]))
        } else {
            u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])
        };
        // For compressed parcels, also put garbage in the upper half: it must be ignored.
        let fetched = if width == 2 { word | 0xa5a5_0000 } else { word };
        let got = decode(fetched);
        if Exp::of(&got) != *want || got.raw != word || got.off != 0 {
            writeln!(
                failures,
                "  {asm:<36} {word:#010x}\n    want {want:?}\n    got  {got:?}"
            )
            .unwrap();
        }
        if want.op != Op::Illegal {
            assert_eq!(got.len(), width as u64, "{asm}: length");
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: decode mismatches:\n{failures}"
    );
}

fn uncompressed_list() -> Vec<(&'static str, Exp)> {
    use Op::*;
    vec![
        // ---- RV64I ----
        ("lui x1, 0x12345", i(Lui, 1, 0, 0x1234_5000)),
        ("lui x31, 0xfffff", i(Lui, 31, 0, -4096)),
        ("lui x0, 0x80000", i(Lui, Z, 0, i32::MIN)),
        ("lui x5, 0", i(Lui, 5, 0, 0)),
        ("auipc x5, 0x7ffff", i(Auipc, 5, 0, 0x7fff_f000)),
        ("auipc x0, 0", i(Auipc, Z, 0, 0)),
        ("auipc x31, 0x80000", i(Auipc, 31, 0, i32::MIN)),
        ("jal x1, .+1048574", i(Jal, 1, 0, 1_048_574)),
        ("jal x0, .-1048576", i(Jal, Z, 0, -1_048_576)),
        ("jal x31, .", i(Jal, 31, 0, 0)),
        ("jal x5, .+2048", i(Jal, 5, 0, 2048)),
        ("jal x5, .-2", i(Jal, 5, 0, -2)),
        ("jalr x1, -2048(x2)", i(Jalr, 1, 2, -2048)),
        ("jalr x0, 2047(x31)", i(Jalr, Z, 31, 2047)),
        ("jalr x0, 0(x1)", i(Jalr, Z, 1, 0)),
        ("beq x1, x2, .+4094", s(Beq, 1, 2, 4094)),
        ("bne x31, x0, .-4096", s(Bne, 31, 0, -4096)),
        ("blt x0, x31, .+2", s(Blt, 0, 31, 2)),
        ("bge x3, x4, .-2", s(Bge, 3, 4, -2)),
        ("bltu x5, x6, .", s(Bltu, 5, 6, 0)),
        ("bgeu x7, x8, .+2048", s(Bgeu, 7, 8, 2048)),
        ("lb x1, -2048(x2)", i(Lb, 1, 2, -2048)),
        ("lh x31, 2047(x0)", i(Lh, 31, 0, 2047)),
        ("lw x0, 0(x31)", i(Lw, Z, 31, 0)),
        ("ld x10, -1(x11)", i(Ld, 10, 11, -1)),
        ("lbu x12, 1(x13)", i(Lbu, 12, 13, 1)),
        ("lhu x14, 100(x15)", i(Lhu, 14, 15, 100)),
        ("lwu x16, -100(x17)", i(Lwu, 16, 17, -100)),
        ("sb x1, -2048(x2)", s(Sb, 2, 1, -2048)),
        ("sh x31, 2047(x0)", s(Sh, 0, 31, 2047)),
        ("sw x0, -1(x31)", s(Sw, 31, 0, -1)),
        ("sd x10, 1234(x11)", s(Sd, 11, 10, 1234)),
        ("addi x1, x2, -2048", i(Addi, 1, 2, -2048)),
        ("addi x0, x0, 0", i(Addi, Z, 0, 0)),
        ("addi x31, x31, 2047", i(Addi, 31, 31, 2047)),
        ("slti x1, x2, -1", i(Slti, 1, 2, -1)),
        ("sltiu x3, x4, 2047", i(Sltiu, 3, 4, 2047)),
        ("sltiu x3, x4, -1", i(Sltiu, 3, 4, -1)),
        ("xori x5, x6, -2048", i(Xori, 5, 6, -2048)),
        ("ori x7, x8, 1", i(Ori, 7, 8, 1)),
        ("andi x9, x10, -1", i(Andi, 9, 10, -1)),
        ("andi x0, x10, 5", i(Andi, Z, 10, 5)),
        ("slli x1, x2, 0", i(Slli, 1, 2, 0)),
        ("slli x3, x4, 63", i(Slli, 3, 4, 63)),
        ("slli x3, x4, 32", i(Slli, 3, 4, 32)),
        ("srli x5, x6, 63", i(Srli, 5, 6, 63)),
        ("srli x0, x1, 1", i(Srli, Z, 1, 1)),
        ("srai x7, x8, 63", i(Srai, 7, 8, 63)),
        ("srai x9, x10, 0", i(Srai, 9, 10, 0)),
        ("srai x9, x10, 31", i(Srai, 9, 10, 31)),
        ("add x1, x2, x3", r(Add, 1, 2, 3)),
        ("add x0, x0, x0", r(Add, Z, 0, 0)),
        ("sub x31, x30, x29", r(Sub, 31, 30, 29)),
        ("sll x4, x5, x6", r(Sll, 4, 5, 6)),
        ("slt x7, x8, x9", r(Slt, 7, 8, 9)),
        ("sltu x10, x0, x11", r(Sltu, 10, 0, 11)),
        ("xor x12, x13, x14", r(Xor, 12, 13, 14)),
        ("srl x15, x16, x17", r(Srl, 15, 16, 17)),
        ("sra x18, x19, x20", r(Sra, 18, 19, 20)),
        ("or x21, x22, x23", r(Or, 21, 22, 23)),
        ("and x0, x24, x25", r(And, Z, 24, 25)),
        ("addiw x1, x2, -2048", i(Addiw, 1, 2, -2048)),
        ("addiw x3, x4, 2047", i(Addiw, 3, 4, 2047)),
        ("addiw x0, x0, 0", i(Addiw, Z, 0, 0)),
        ("slliw x1, x2, 31", i(Slliw, 1, 2, 31)),
        ("slliw x3, x4, 0", i(Slliw, 3, 4, 0)),
        ("srliw x5, x6, 31", i(Srliw, 5, 6, 31)),
        ("sraiw x7, x8, 31", i(Sraiw, 7, 8, 31)),
        ("sraiw x0, x9, 0", i(Sraiw, Z, 9, 0)),
        ("addw x1, x2, x3", r(Addw, 1, 2, 3)),
        ("subw x31, x0, x30", r(Subw, 31, 0, 30)),
        ("sllw x4, x5, x6", r(Sllw, 4, 5, 6)),
        ("srlw x7, x8, x9", r(Srlw, 7, 8, 9)),
        ("sraw x0, x10, x11", r(Sraw, Z, 10, 11)),
        // ---- Fences and system ----
        ("fence", i(Fence, 0, 0, 0x0ff)),
        ("fence r, w", i(Fence, 0, 0, 0x021)),
        ("fence iorw, o", i(Fence, 0, 0, 0x0f4)),
        ("fence.tso", i(Fence, 0, 0, 0x833 - 4096)),
        (".insn i 0x0f, 0, x0, x0, 0x010 # pause", e(Pause)),
        // pred=W, succ=0 with a nonzero rs1 or rd is not `pause`: an ordinary (reserved-field)
        // fence, with the ignored fields cleared.
        (".insn i 0x0f, 0, x0, x1, 0x010", i(Fence, 0, 0, 0x010)),
        (".insn i 0x0f, 0, x2, x0, 0x010", i(Fence, 0, 0, 0x010)),
        ("fence.i", e(FenceI)),
        ("ecall", e(Ecall)),
        ("ebreak", e(Ebreak)),
        ("sret", e(Sret)),
        ("mret", e(Mret)),
        ("wfi", e(Wfi)),
        ("sfence.vma x1, x2", r(SfenceVma, 0, 1, 2)),
        ("sfence.vma", r(SfenceVma, 0, 0, 0)),
        ("sfence.vma x31, x0", r(SfenceVma, 0, 31, 0)),
        // ---- Zicsr (imm = CSR number, zero-extended) ----
        ("csrrw x1, 0xfff, x2", i(Csrrw, 1, 2, 0xfff)),
        ("csrrs x0, mstatus, x0", i(Csrrs, Z, 0, 0x300)),
        ("csrrc x31, 0x800, x31", i(Csrrc, 31, 31, 0x800)),
        ("csrrw x0, 0x000, x5", i(Csrrw, Z, 5, 0)),
        ("csrrwi x1, 0x001, 31", i(Csrrwi, 1, 31, 1)),
        ("csrrsi x0, 0x7ff, 0", i(Csrrsi, Z, 0, 0x7ff)),
        ("csrrci x5, 0xc00, 16", i(Csrrci, 5, 16, 0xc00)),
        // ---- RV64M ----
        ("mul x1, x2, x3", r(Mul, 1, 2, 3)),
        ("mulh x4, x5, x6", r(Mulh, 4, 5, 6)),
        ("mulhsu x7, x8, x9", r(Mulhsu, 7, 8, 9)),
        ("mulhu x10, x11, x12", r(Mulhu, 10, 11, 12)),
        ("div x13, x14, x15", r(Div, 13, 14, 15)),
        ("divu x16, x17, x18", r(Divu, 16, 17, 18)),
        ("rem x19, x20, x21", r(Rem, 19, 20, 21)),
        ("remu x0, x22, x23", r(Remu, Z, 22, 23)),
        ("mulw x24, x25, x26", r(Mulw, 24, 25, 26)),
        ("divw x27, x28, x29", r(Divw, 27, 28, 29)),
        ("divuw x30, x31, x0", r(Divuw, 30, 31, 0)),
        ("remw x1, x0, x31", r(Remw, 1, 0, 31)),
        ("remuw x0, x2, x3", r(Remuw, Z, 2, 3)),
        // ---- RV64A (rm = aq << 1 | rl) ----
        ("lr.w x1, (x2)", r(LrW, 1, 2, 0)),
        ("lr.w.aq x0, (x31)", r(LrW, Z, 31, 0).rm(2)),
        ("lr.w.rl x3, (x4)", r(LrW, 3, 4, 0).rm(1)),
        ("lr.w.aqrl x5, (x6)", r(LrW, 5, 6, 0).rm(3)),
        ("sc.w x3, x4, (x5)", r(ScW, 3, 5, 4)),
        ("sc.w.aqrl x0, x31, (x30)", r(ScW, Z, 30, 31).rm(3)),
        ("amoswap.w x1, x2, (x3)", r(AmoswapW, 1, 3, 2)),
        ("amoadd.w.aq x4, x5, (x6)", r(AmoaddW, 4, 6, 5).rm(2)),
        ("amoxor.w.rl x7, x8, (x9)", r(AmoxorW, 7, 9, 8).rm(1)),
        ("amoand.w x10, x11, (x12)", r(AmoandW, 10, 12, 11)),
        ("amoor.w x13, x14, (x15)", r(AmoorW, 13, 15, 14)),
        ("amomin.w x16, x17, (x18)", r(AmominW, 16, 18, 17)),
        ("amomax.w x19, x20, (x21)", r(AmomaxW, 19, 21, 20)),
        ("amominu.w x22, x23, (x24)", r(AmominuW, 22, 24, 23)),
        ("amomaxu.w.aqrl x0, x1, (x2)", r(AmomaxuW, Z, 2, 1).rm(3)),
        ("lr.d x1, (x2)", r(LrD, 1, 2, 0)),
        ("lr.d.aqrl x0, (x3)", r(LrD, Z, 3, 0).rm(3)),
        ("sc.d.rl x3, x4, (x5)", r(ScD, 3, 5, 4).rm(1)),
        ("sc.d x31, x0, (x0)", r(ScD, 31, 0, 0)),
        ("amoswap.d.aq x1, x2, (x3)", r(AmoswapD, 1, 3, 2).rm(2)),
        ("amoadd.d x4, x5, (x6)", r(AmoaddD, 4, 6, 5)),
        ("amoxor.d x7, x8, (x9)", r(AmoxorD, 7, 9, 8)),
        ("amoand.d x10, x11, (x12)", r(AmoandD, 10, 12, 11)),
        ("amoor.d.rl x13, x14, (x15)", r(AmoorD, 13, 15, 14).rm(1)),
        ("amomin.d x16, x17, (x18)", r(AmominD, 16, 18, 17)),
        ("amomax.d x19, x20, (x21)", r(AmomaxD, 19, 21, 20)),
        ("amominu.d x22, x23, (x24)", r(AmominuD, 22, 24, 23)),
        ("amomaxu.d x0, x31, (x30)", r(AmomaxuD, Z, 30, 31)),
        // ---- F ----
        ("flw f1, -2048(x2)", i(Flw, 1, 2, -2048)),
        ("flw f0, 2047(x31)", i(Flw, 0, 31, 2047)),
        ("fsw f31, -1(x0)", s(Fsw, 0, 31, -1)),
        ("fsw f0, 2047(x5)", s(Fsw, 5, 0, 2047)),
        ("fmadd.s f1, f2, f3, f4", r(FmaddS, 1, 2, 3).rs3(4).rm(7)),
        (
            "fmadd.s f31, f30, f29, f28, rne",
            r(FmaddS, 31, 30, 29).rs3(28).rm(0),
        ),
        (
            "fmsub.s f0, f1, f2, f31, rtz",
            r(FmsubS, 0, 1, 2).rs3(31).rm(1),
        ),
        (
            "fnmsub.s f5, f6, f7, f8, rdn",
            r(FnmsubS, 5, 6, 7).rs3(8).rm(2),
        ),
        (
            "fnmadd.s f9, f10, f11, f12, rup",
            r(FnmaddS, 9, 10, 11).rs3(12).rm(3),
        ),
        ("fadd.s f1, f2, f3", r(FaddS, 1, 2, 3).rm(7)),
        ("fadd.s f0, f31, f0, rmm", r(FaddS, 0, 31, 0).rm(4)),
        ("fsub.s f4, f5, f6, rne", r(FsubS, 4, 5, 6)),
        ("fmul.s f7, f8, f9, rtz", r(FmulS, 7, 8, 9).rm(1)),
        ("fdiv.s f10, f11, f12", r(FdivS, 10, 11, 12).rm(7)),
        ("fsqrt.s f13, f14", r(FsqrtS, 13, 14, 0).rm(7)),
        ("fsqrt.s f31, f0, rup", r(FsqrtS, 31, 0, 0).rm(3)),
        ("fsgnj.s f1, f2, f3", r(FsgnjS, 1, 2, 3)),
        ("fsgnjn.s f4, f5, f6", r(FsgnjnS, 4, 5, 6)),
        ("fsgnjx.s f7, f8, f9", r(FsgnjxS, 7, 8, 9)),
        ("fmin.s f10, f11, f12", r(FminS, 10, 11, 12)),
        ("fmax.s f31, f30, f0", r(FmaxS, 31, 30, 0)),
        ("fcvt.w.s x1, f2", r(FcvtWS, 1, 2, 0).rm(7)),
        ("fcvt.w.s x0, f31, rtz", r(FcvtWS, Z, 31, 0).rm(1)),
        ("fcvt.wu.s x3, f4, rdn", r(FcvtWuS, 3, 4, 0).rm(2)),
        ("fcvt.l.s x5, f6", r(FcvtLS, 5, 6, 0).rm(7)),
        ("fcvt.lu.s x7, f8, rmm", r(FcvtLuS, 7, 8, 0).rm(4)),
        ("fmv.x.w x1, f2", r(FmvXW, 1, 2, 0)),
        ("fmv.x.w x0, f31", r(FmvXW, Z, 31, 0)),
        ("feq.s x3, f4, f5", r(FeqS, 3, 4, 5)),
        ("flt.s x6, f7, f8", r(FltS, 6, 7, 8)),
        ("fle.s x0, f9, f10", r(FleS, Z, 9, 10)),
        ("fclass.s x11, f12", r(FclassS, 11, 12, 0)),
        ("fcvt.s.w f1, x2", r(FcvtSW, 1, 2, 0).rm(7)),
        ("fcvt.s.w f0, x0, rne", r(FcvtSW, 0, 0, 0)),
        ("fcvt.s.wu f3, x4, rtz", r(FcvtSWu, 3, 4, 0).rm(1)),
        ("fcvt.s.l f5, x6", r(FcvtSL, 5, 6, 0).rm(7)),
        ("fcvt.s.lu f31, x31, rmm", r(FcvtSLu, 31, 31, 0).rm(4)),
        ("fmv.w.x f1, x2", r(FmvWX, 1, 2, 0)),
        ("fmv.w.x f0, x0", r(FmvWX, 0, 0, 0)),
        // ---- D ----
        ("fld f1, -2048(x2)", i(Fld, 1, 2, -2048)),
        ("fld f31, 2047(x0)", i(Fld, 31, 0, 2047)),
        ("fsd f0, -1(x31)", s(Fsd, 31, 0, -1)),
        ("fsd f31, 8(x2)", s(Fsd, 2, 31, 8)),
        (
            "fmadd.d f1, f2, f3, f4, rmm",
            r(FmaddD, 1, 2, 3).rs3(4).rm(4),
        ),
        ("fmsub.d f5, f6, f7, f8", r(FmsubD, 5, 6, 7).rs3(8).rm(7)),
        (
            "fnmsub.d f9, f10, f11, f12, rne",
            r(FnmsubD, 9, 10, 11).rs3(12),
        ),
        (
            "fnmadd.d f31, f0, f1, f2, dyn",
            r(FnmaddD, 31, 0, 1).rs3(2).rm(7),
        ),
        ("fadd.d f1, f2, f3", r(FaddD, 1, 2, 3).rm(7)),
        ("fsub.d f4, f5, f6, rtz", r(FsubD, 4, 5, 6).rm(1)),
        ("fmul.d f7, f8, f9, rdn", r(FmulD, 7, 8, 9).rm(2)),
        ("fdiv.d f10, f11, f12, rup", r(FdivD, 10, 11, 12).rm(3)),
        ("fsqrt.d f13, f14", r(FsqrtD, 13, 14, 0).rm(7)),
        ("fsgnj.d f1, f2, f3", r(FsgnjD, 1, 2, 3)),
        ("fsgnjn.d f4, f5, f6", r(FsgnjnD, 4, 5, 6)),
        ("fsgnjx.d f7, f8, f9", r(FsgnjxD, 7, 8, 9)),
        ("fmin.d f10, f11, f12", r(FminD, 10, 11, 12)),
        ("fmax.d f13, f14, f15", r(FmaxD, 13, 14, 15)),
        ("fcvt.s.d f1, f2", r(FcvtSD, 1, 2, 0).rm(7)),
        ("fcvt.s.d f3, f4, rtz", r(FcvtSD, 3, 4, 0).rm(1)),
        // binutils 2.40 only accepts fcvt.d.s / fcvt.d.w / fcvt.d.wu without an rm operand
        // and encodes rm = 0 (RNE); other rounding modes are covered with `.insn` below.
        ("fcvt.d.s f5, f6", r(FcvtDS, 5, 6, 0)),
        (
            ".insn r OP_FP, 7, 0x21, f5, f6, f0",
            r(FcvtDS, 5, 6, 0).rm(7),
        ),
        ("fcvt.w.d x1, f2", r(FcvtWD, 1, 2, 0).rm(7)),
        ("fcvt.wu.d x3, f4, rtz", r(FcvtWuD, 3, 4, 0).rm(1)),
        ("fcvt.l.d x5, f6, rdn", r(FcvtLD, 5, 6, 0).rm(2)),
        ("fcvt.lu.d x0, f7", r(FcvtLuD, Z, 7, 0).rm(7)),
        ("fmv.x.d x1, f2", r(FmvXD, 1, 2, 0)),
        ("feq.d x3, f4, f5", r(FeqD, 3, 4, 5)),
        ("flt.d x6, f7, f8", r(FltD, 6, 7, 8)),
        ("fle.d x9, f10, f11", r(FleD, 9, 10, 11)),
        ("fclass.d x0, f12", r(FclassD, Z, 12, 0)),
        ("fcvt.d.w f1, x2", r(FcvtDW, 1, 2, 0)),
        (
            ".insn r OP_FP, 4, 0x69, f1, x2, x0",
            r(FcvtDW, 1, 2, 0).rm(4),
        ),
        ("fcvt.d.wu f3, x4", r(FcvtDWu, 3, 4, 0)),
        (
            ".insn r OP_FP, 7, 0x69, f3, x4, x1",
            r(FcvtDWu, 3, 4, 0).rm(7),
        ),
        ("fcvt.d.l f5, x6", r(FcvtDL, 5, 6, 0).rm(7)),
        ("fcvt.d.lu f7, x8, rup", r(FcvtDLu, 7, 8, 0).rm(3)),
        ("fmv.d.x f9, x10", r(FmvDX, 9, 10, 0)),
        ("fmv.d.x f0, x0", r(FmvDX, 0, 0, 0)),
        // ---- Reserved rounding modes (assembled with .insn) ----
        (".insn r OP_FP, 5, 0x00, f1, f2, f3", ILLEGAL),
        (".insn r OP_FP, 6, 0x01, f1, f2, f3", ILLEGAL),
        (".insn r4 MADD, 5, 0, f1, f2, f3, f4", ILLEGAL),
        (".insn r4 NMADD, 6, 1, f1, f2, f3, f4", ILLEGAL),
        (".insn r OP_FP, 5, 0x60, x1, f2, x0", ILLEGAL),
        (".insn r OP_FP, 6, 0x69, f1, x2, x3", ILLEGAL),
        (".insn r OP_FP, 5, 0x2d, f1, f2, x0", ILLEGAL),
    ]
}

fn hypervisor_list() -> Vec<(&'static str, Exp)> {
    use Op::*;
    vec![
        ("hfence.vvma x1, x2", r(HypervisorOnly, 0, 1, 2)),
        ("hfence.vvma", r(HypervisorOnly, 0, 0, 0)),
        ("hfence.gvma x0, x31", r(HypervisorOnly, 0, 0, 31)),
        ("hinval.vvma x3, x4", r(HypervisorOnly, 0, 3, 4)),
        ("hinval.gvma x5, x6", r(HypervisorOnly, 0, 5, 6)),
        ("hlv.b x1, (x2)", r(HypervisorOnly, 1, 2, 0)),
        ("hlv.bu x0, (x3)", r(HypervisorOnly, Z, 3, 1)),
        ("hlv.h x4, (x5)", r(HypervisorOnly, 4, 5, 0)),
        ("hlv.hu x6, (x7)", r(HypervisorOnly, 6, 7, 1)),
        ("hlvx.hu x8, (x9)", r(HypervisorOnly, 8, 9, 3)),
        ("hlv.w x10, (x11)", r(HypervisorOnly, 10, 11, 0)),
        ("hlv.wu x12, (x13)", r(HypervisorOnly, 12, 13, 1)),
        ("hlvx.wu x14, (x15)", r(HypervisorOnly, 14, 15, 3)),
        ("hlv.d x31, (x0)", r(HypervisorOnly, 31, 0, 0)),
        ("hsv.b x1, (x2)", r(HypervisorOnly, 0, 2, 1)),
        ("hsv.h x3, (x4)", r(HypervisorOnly, 0, 4, 3)),
        ("hsv.w x0, (x5)", r(HypervisorOnly, 0, 5, 0)),
        ("hsv.d x31, (x30)", r(HypervisorOnly, 0, 30, 31)),
        // Svinval's supervisor instructions are not implemented.
        ("sinval.vma x1, x2", ILLEGAL),
        ("sfence.w.inval", ILLEGAL),
        ("sfence.inval.ir", ILLEGAL),
    ]
}

fn compressed_list() -> Vec<(&'static str, Exp)> {
    use Op::*;
    vec![
        // ---- Quadrant 0 ----
        ("c.addi4spn x8, x2, 4", i(Addi, 8, 2, 4)),
        ("c.addi4spn x15, x2, 1020", i(Addi, 15, 2, 1020)),
        ("c.addi4spn x9, x2, 512", i(Addi, 9, 2, 512)),
        ("c.fld f8, 0(x8)", i(Fld, 8, 8, 0)),
        ("c.fld f15, 248(x15)", i(Fld, 15, 15, 248)),
        ("c.lw x9, 124(x10)", i(Lw, 9, 10, 124)),
        ("c.lw x15, 4(x8)", i(Lw, 15, 8, 4)),
        ("c.lw x8, 64(x8)", i(Lw, 8, 8, 64)),
        ("c.ld x8, 248(x15)", i(Ld, 8, 15, 248)),
        ("c.ld x12, 8(x13)", i(Ld, 12, 13, 8)),
        ("c.fsd f8, 248(x9)", s(Fsd, 9, 8, 248)),
        ("c.fsd f15, 0(x15)", s(Fsd, 15, 15, 0)),
        ("c.sw x15, 124(x8)", s(Sw, 8, 15, 124)),
        ("c.sw x8, 4(x9)", s(Sw, 9, 8, 4)),
        ("c.sd x10, 0(x11)", s(Sd, 11, 10, 0)),
        ("c.sd x14, 248(x13)", s(Sd, 13, 14, 248)),
        // ---- Quadrant 1 ----
        ("c.nop", i(Addi, Z, 0, 0)),
        ("c.addi x1, -32", i(Addi, 1, 1, -32)),
        ("c.addi x31, 31", i(Addi, 31, 31, 31)),
        ("c.addiw x1, -32", i(Addiw, 1, 1, -32)),
        ("c.addiw x31, 31", i(Addiw, 31, 31, 31)),
        ("c.addiw x5, 0", i(Addiw, 5, 5, 0)),
        ("c.li x1, -32", i(Addi, 1, 0, -32)),
        ("c.li x31, 31", i(Addi, 31, 0, 31)),
        ("c.li x10, 0", i(Addi, 10, 0, 0)),
        ("c.addi16sp x2, -512", i(Addi, 2, 2, -512)),
        ("c.addi16sp x2, 496", i(Addi, 2, 2, 496)),
        ("c.addi16sp x2, 16", i(Addi, 2, 2, 16)),
        ("c.lui x1, 1", i(Lui, 1, 0, 4096)),
        ("c.lui x31, 0xfffe0", i(Lui, 31, 0, -131_072)),
        ("c.lui x3, 0x1f", i(Lui, 3, 0, 0x1f000)),
        ("c.lui x4, 0xfffff", i(Lui, 4, 0, -4096)),
        ("c.srli x8, 1", i(Srli, 8, 8, 1)),
        ("c.srli x15, 63", i(Srli, 15, 15, 63)),
        ("c.srai x9, 32", i(Srai, 9, 9, 32)),
        ("c.srai x10, 1", i(Srai, 10, 10, 1)),
        ("c.andi x11, -32", i(Andi, 11, 11, -32)),
        ("c.andi x12, 31", i(Andi, 12, 12, 31)),
        ("c.andi x13, 0", i(Andi, 13, 13, 0)),
        ("c.sub x8, x15", r(Sub, 8, 8, 15)),
        ("c.xor x9, x14", r(Xor, 9, 9, 14)),
        ("c.or x10, x13", r(Or, 10, 10, 13)),
        ("c.and x11, x12", r(And, 11, 11, 12)),
        ("c.subw x12, x11", r(Subw, 12, 12, 11)),
        ("c.addw x15, x8", r(Addw, 15, 15, 8)),
        ("c.j .-2048", i(Jal, Z, 0, -2048)),
        ("c.j .+2046", i(Jal, Z, 0, 2046)),
        ("c.j .+2", i(Jal, Z, 0, 2)),
        ("c.beqz x8, .-256", s(Beq, 8, 0, -256)),
        ("c.bnez x15, .+254", s(Bne, 15, 0, 254)),
        ("c.beqz x9, .+2", s(Beq, 9, 0, 2)),
        ("c.bnez x12, .-2", s(Bne, 12, 0, -2)),
        // ---- Quadrant 2 ----
        ("c.slli x1, 1", i(Slli, 1, 1, 1)),
        ("c.slli x31, 63", i(Slli, 31, 31, 63)),
        ("c.slli x2, 32", i(Slli, 2, 2, 32)),
        ("c.fldsp f0, 0(x2)", i(Fld, 0, 2, 0)),
        ("c.fldsp f31, 504(x2)", i(Fld, 31, 2, 504)),
        ("c.lwsp x1, 252(x2)", i(Lw, 1, 2, 252)),
        ("c.lwsp x31, 0(x2)", i(Lw, 31, 2, 0)),
        ("c.ldsp x31, 504(x2)", i(Ld, 31, 2, 504)),
        ("c.ldsp x1, 8(x2)", i(Ld, 1, 2, 8)),
        ("c.jr x1", i(Jalr, Z, 1, 0)),
        ("c.jr x31", i(Jalr, Z, 31, 0)),
        ("c.mv x1, x31", r(Add, 1, 0, 31)),
        ("c.mv x31, x1", r(Add, 31, 0, 1)),
        ("c.ebreak", e(Ebreak)),
        ("c.jalr x5", i(Jalr, 1, 5, 0)),
        ("c.jalr x1", i(Jalr, 1, 1, 0)),
        ("c.add x31, x1", r(Add, 31, 31, 1)),
        ("c.add x2, x2", r(Add, 2, 2, 2)),
        ("c.fsdsp f31, 504(x2)", s(Fsd, 2, 31, 504)),
        ("c.fsdsp f0, 0(x2)", s(Fsd, 2, 0, 0)),
        ("c.swsp x31, 252(x2)", s(Sw, 2, 31, 252)),
        ("c.swsp x0, 0(x2)", s(Sw, 2, 0, 0)),
        ("c.sdsp x1, 504(x2)", s(Sd, 2, 1, 504)),
        ("c.sdsp x0, 8(x2)", s(Sd, 2, 0, 8)),
    ]
}

#[test]
fn decode_assembled_uncompressed() {
    check_list("rv64g", MARCH_G, ".option norvc\n", 4, &uncompressed_list());
}

#[test]
fn decode_assembled_hypervisor() {
    check_list("rv64h", MARCH_H, ".option norvc\n", 4, &hypervisor_list());
}

#[test]
fn decode_assembled_compressed() {
    check_list("rv64c", MARCH_GC, ".option rvc\n", 2, &compressed_list());
}

/// Every compressed instruction in the list decodes exactly like its 32-bit expansion (which
/// the assembler writes for us by assembling the same text without RVC).
#[test]
fn decode_compressed_matches_expansion() {
    let list = compressed_list();
    // The 32-bit expansion of each listed compressed instruction, as assembler text.
    let expansion = |exp: &Exp| -> String {
        let x = |r: u8| format!("x{}", if r == Z { 0 } else { r });
        let name = format!("{:?}", exp.op).to_lowercase();
        let f = |r: u8| format!("f{r}");
        use Op::*;
        match exp.op {
            Addi | Addiw | Andi | Slli | Srli | Srai => {
                format!("{} {}, {}, {}", name, x(exp.rd), x(exp.rs1), exp.imm)
            }
            Lui => format!("lui {}, {:#x}", x(exp.rd), (exp.imm as u32) >> 12),
            Lw | Ld | Jalr => format!("{} {}, {}({})", name, x(exp.rd), exp.imm, x(exp.rs1)),
            Fld => format!("fld {}, {}({})", f(exp.rd), exp.imm, x(exp.rs1)),
            Sw | Sd => format!("{} {}, {}({})", name, x(exp.rs2), exp.imm, x(exp.rs1)),
            Fsd => format!("fsd {}, {}({})", f(exp.rs2), exp.imm, x(exp.rs1)),
            Add | Sub | Xor | Or | And | Addw | Subw => {
                format!("{} {}, {}, {}", name, x(exp.rd), x(exp.rs1), x(exp.rs2))
            }
            Jal => format!("jal {}, .{:+}", x(exp.rd), exp.imm),
            Beq | Bne => format!("{} {}, {}, .{:+}", name, x(exp.rs1), x(exp.rs2), exp.imm),
            Ebreak => "ebreak".to_string(),
            other => panic!("no expansion for {other:?}"),
        }
    };
    let mut src = String::from(".option rvc\n");
    for (asm, exp) in &list {
        writeln!(src, "{asm}\n.option norvc\n{}\n.option rvc", expansion(exp)).unwrap();
    }
    let bytes = assemble("rv64c-expansion", MARCH_GC, &src);
    assert_eq!(bytes.len(), 6 * list.len());
    for (k, (asm, _)) in list.iter().enumerate() {
        let b = &bytes[6 * k..6 * k + 6];
        let short = decode(u32::from(u16::from_le_bytes([b[0], b[1]])));
        let long = decode(u32::from_le_bytes([b[2], b[3], b[4], b[5]]));
        assert_ne!(short.op, Op::Illegal, "{asm}");
        assert_eq!(
            Exp::of(&short),
            Exp::of(&long),
            "{asm}: compressed vs expanded"
        );
        assert_eq!((short.len(), long.len()), (2, 4), "{asm}");
    }
}

/// Every `Op` (but `Illegal`) is covered by the assembled lists.
#[test]
fn decode_lists_cover_every_op() {
    let covered: BTreeSet<u8> = uncompressed_list()
        .iter()
        .chain(hypervisor_list().iter())
        .map(|(_, exp)| exp.op as u8)
        .collect();
    let missing: Vec<u8> = (1..=Op::FmvDX as u8)
        .filter(|op| !covered.contains(op))
        .collect();
    assert!(
        missing.is_empty(),
        "ops (by discriminant) not covered by the lists: {missing:?}"
    );
    let compressed: BTreeSet<u8> = compressed_list().iter().map(|(_, e)| e.op as u8).collect();
    // Addi, Addiw, Lui, Srli, Srai, Andi, Sub, Xor, Or, And, Subw, Addw, Jal, Beq, Bne, Slli,
    // Fld, Lw, Ld, Jalr, Add, Ebreak, Fsd, Sw, Sd
    assert_eq!(compressed.len(), 25);
}

// ---------------------------------------------------------------------------------------------
// Cross-checks against objdump
// ---------------------------------------------------------------------------------------------

/// One disassembled instruction: address, mnemonic, operands.
struct Dis {
    addr: u64,
    mnem: String,
    ops: Vec<String>,
}

/// Disassemble raw parcels (`(bytes, value)`) with objdump, with the ISA fixed by the ELF's
/// arch attribute (so the result does not depend on binutils' default ISA).
fn objdump(name: &str, march: &str, parcels: &[(u32, u32)]) -> Vec<Dis> {
    let mut src = String::new();
    for &(len, value) in parcels {
        writeln!(src, ".insn {len}, {value:#x}").unwrap();
    }
    let elf = assemble_elf(name, march, &src);
    let text = run(
        OBJDUMP,
        &[
            "-d",
            "-z",
            "-M",
            "no-aliases,numeric",
            elf.to_str().unwrap(),
        ],
    );
    let mut out = Vec::new();
    for line in text.lines() {
        let mut cols = line.split('\t');
        let (Some(addr), Some(_hex), Some(mnem)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        let Some(addr) = addr.trim().strip_suffix(':') else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        let operands = cols.next().unwrap_or("");
        // Drop objdump's annotations: ` <symbol+off>` and ` # comment`.
        let operands = operands.split(" <").next().unwrap();
        let operands = operands.split('#').next().unwrap().trim();
        let ops = if operands.is_empty() {
            Vec::new()
        } else {
            operands.split(',').map(|s| s.trim().to_string()).collect()
        };
        out.push(Dis {
            addr,
            mnem: mnem.trim().to_string(),
            ops,
        });
    }
    assert_eq!(
        out.len(),
        parcels.len(),
        "objdump output does not have one line per parcel"
    );
    out
}

/// How objdump's operands map onto our fields. Letters: `d` integer rd (x0 -> sink), `D` FP rd,
/// `B` integer rd (sink) that is also rs1, `s`/`S` integer/FP rs1, `t`/`T` integer/FP rs2, `r`
/// FP rs3, `i` immediate, `u` 20-bit upper immediate, `b` PC-relative target, `m` `imm(xN)`,
/// `A` `(xN)`, `c` CSR (name or number), `z` 5-bit zimm into rs1, `M` optional rounding mode
/// (default dyn), `N` optional rounding mode (default rne), `*` ignore the rest (and imm).
fn objdump_spec(mnem: &str) -> Option<(Exp, &'static str)> {
    use Op::*;
    let x = |op| Some((e(op), ""));
    let spec = |op, s: &'static str| Some((e(op), s));
    // AMOs: strip and record the ordering suffix.
    if let Some(base) = mnem.strip_suffix(".aqrl") {
        return objdump_spec(base).map(|(exp, s)| (exp.rm(3), s));
    }
    if let Some(base) = mnem.strip_suffix(".aq") {
        return objdump_spec(base).map(|(exp, s)| (exp.rm(2), s));
    }
    if let Some(base) = mnem.strip_suffix(".rl") {
        if base.starts_with("amo") || base.starts_with("lr") || base.starts_with("sc") {
            return objdump_spec(base).map(|(exp, s)| (exp.rm(1), s));
        }
    }
    let amo = |op| spec(op, "dtA");
    match mnem {
        "lui" => spec(Lui, "du"),
        "auipc" => spec(Auipc, "du"),
        "jal" => spec(Jal, "db"),
        "jalr" => spec(Jalr, "dm"),
        "beq" => spec(Beq, "stb"),
        "bne" => spec(Bne, "stb"),
        "blt" => spec(Blt, "stb"),
        "bge" => spec(Bge, "stb"),
        "bltu" => spec(Bltu, "stb"),
        "bgeu" => spec(Bgeu, "stb"),
        "lb" => spec(Lb, "dm"),
        "lh" => spec(Lh, "dm"),
        "lw" => spec(Lw, "dm"),
        "ld" => spec(Ld, "dm"),
        "lbu" => spec(Lbu, "dm"),
        "lhu" => spec(Lhu, "dm"),
        "lwu" => spec(Lwu, "dm"),
        "sb" => spec(Sb, "tm"),
        "sh" => spec(Sh, "tm"),
        "sw" => spec(Sw, "tm"),
        "sd" => spec(Sd, "tm"),
        "addi" => spec(Addi, "dsi"),
        "slti" => spec(Slti, "dsi"),
        "sltiu" => spec(Sltiu, "dsi"),
        "xori" => spec(Xori, "dsi"),
        "ori" => spec(Ori, "dsi"),
        "andi" => spec(Andi, "dsi"),
        "slli" => spec(Slli, "dsi"),
        "srli" => spec(Srli, "dsi"),
        "srai" => spec(Srai, "dsi"),
        "add" => spec(Add, "dst"),
        "sub" => spec(Sub, "dst"),
        "sll" => spec(Sll, "dst"),
        "slt" => spec(Slt, "dst"),
        "sltu" => spec(Sltu, "dst"),
        "xor" => spec(Xor, "dst"),
        "srl" => spec(Srl, "dst"),
        "sra" => spec(Sra, "dst"),
        "or" => spec(Or, "dst"),
        "and" => spec(And, "dst"),
        "addiw" => spec(Addiw, "dsi"),
        "slliw" => spec(Slliw, "dsi"),
        "srliw" => spec(Srliw, "dsi"),
        "sraiw" => spec(Sraiw, "dsi"),
        "addw" => spec(Addw, "dst"),
        "subw" => spec(Subw, "dst"),
        "sllw" => spec(Sllw, "dst"),
        "srlw" => spec(Srlw, "dst"),
        "sraw" => spec(Sraw, "dst"),
        "fence" | "fence.tso" => spec(Fence, "*"),
        "fence.i" => x(FenceI),
        "ecall" => x(Ecall),
        "ebreak" => x(Ebreak),
        "sret" => x(Sret),
        "mret" => x(Mret),
        "wfi" => x(Wfi),
        "sfence.vma" => spec(SfenceVma, "st"),
        "hfence.vvma" | "hfence.gvma" | "hinval.vvma" | "hinval.gvma" => spec(HypervisorOnly, "st"),
        // hlv/hlvx keep their rs2 field (which selects the variant); hsv has no rd.
        "hlv.b" | "hlv.h" | "hlv.w" | "hlv.d" => spec(HypervisorOnly, "dA"),
        "hlv.bu" | "hlv.hu" | "hlv.wu" => Some((
            Exp {
                rs2: 1,
                ..e(HypervisorOnly)
            },
            "dA",
        )),
        "hlvx.hu" | "hlvx.wu" => Some((
            Exp {
                rs2: 3,
                ..e(HypervisorOnly)
            },
            "dA",
        )),
        "hsv.b" | "hsv.h" | "hsv.w" | "hsv.d" => spec(HypervisorOnly, "tA"),
        "csrrw" => spec(Csrrw, "dcs"),
        "csrrs" => spec(Csrrs, "dcs"),
        "csrrc" => spec(Csrrc, "dcs"),
        "csrrwi" => spec(Csrrwi, "dcz"),
        "csrrsi" => spec(Csrrsi, "dcz"),
        "csrrci" => spec(Csrrci, "dcz"),
        "mul" => spec(Mul, "dst"),
        "mulh" => spec(Mulh, "dst"),
        "mulhsu" => spec(Mulhsu, "dst"),
        "mulhu" => spec(Mulhu, "dst"),
        "div" => spec(Div, "dst"),
        "divu" => spec(Divu, "dst"),
        "rem" => spec(Rem, "dst"),
        "remu" => spec(Remu, "dst"),
        "mulw" => spec(Mulw, "dst"),
        "divw" => spec(Divw, "dst"),
        "divuw" => spec(Divuw, "dst"),
        "remw" => spec(Remw, "dst"),
        "remuw" => spec(Remuw, "dst"),
        "lr.w" => spec(LrW, "dA"),
        "sc.w" => amo(ScW),
        "amoswap.w" => amo(AmoswapW),
        "amoadd.w" => amo(AmoaddW),
        "amoxor.w" => amo(AmoxorW),
        "amoand.w" => amo(AmoandW),
        "amoor.w" => amo(AmoorW),
        "amomin.w" => amo(AmominW),
        "amomax.w" => amo(AmomaxW),
        "amominu.w" => amo(AmominuW),
        "amomaxu.w" => amo(AmomaxuW),
        "lr.d" => spec(LrD, "dA"),
        "sc.d" => amo(ScD),
        "amoswap.d" => amo(AmoswapD),
        "amoadd.d" => amo(AmoaddD),
        "amoxor.d" => amo(AmoxorD),
        "amoand.d" => amo(AmoandD),
        "amoor.d" => amo(AmoorD),
        "amomin.d" => amo(AmominD),
        "amomax.d" => amo(AmomaxD),
        "amominu.d" => amo(AmominuD),
        "amomaxu.d" => amo(AmomaxuD),
        "flw" => spec(Flw, "Dm"),
        "fsw" => spec(Fsw, "Tm"),
        "fmadd.s" => spec(FmaddS, "DSTrM"),
        "fmsub.s" => spec(FmsubS, "DSTrM"),
        "fnmsub.s" => spec(FnmsubS, "DSTrM"),
        "fnmadd.s" => spec(FnmaddS, "DSTrM"),
        "fadd.s" => spec(FaddS, "DSTM"),
        "fsub.s" => spec(FsubS, "DSTM"),
        "fmul.s" => spec(FmulS, "DSTM"),
        "fdiv.s" => spec(FdivS, "DSTM"),
        "fsqrt.s" => spec(FsqrtS, "DSM"),
        "fsgnj.s" => spec(FsgnjS, "DST"),
        "fsgnjn.s" => spec(FsgnjnS, "DST"),
        "fsgnjx.s" => spec(FsgnjxS, "DST"),
        "fmin.s" => spec(FminS, "DST"),
        "fmax.s" => spec(FmaxS, "DST"),
        "fcvt.w.s" => spec(FcvtWS, "dSM"),
        "fcvt.wu.s" => spec(FcvtWuS, "dSM"),
        "fcvt.l.s" => spec(FcvtLS, "dSM"),
        "fcvt.lu.s" => spec(FcvtLuS, "dSM"),
        "fmv.x.w" => spec(FmvXW, "dS"),
        "feq.s" => spec(FeqS, "dST"),
        "flt.s" => spec(FltS, "dST"),
        "fle.s" => spec(FleS, "dST"),
        "fclass.s" => spec(FclassS, "dS"),
        "fcvt.s.w" => spec(FcvtSW, "DsM"),
        "fcvt.s.wu" => spec(FcvtSWu, "DsM"),
        "fcvt.s.l" => spec(FcvtSL, "DsM"),
        "fcvt.s.lu" => spec(FcvtSLu, "DsM"),
        "fmv.w.x" => spec(FmvWX, "Ds"),
        "fld" => spec(Fld, "Dm"),
        "fsd" => spec(Fsd, "Tm"),
        "fmadd.d" => spec(FmaddD, "DSTrM"),
        "fmsub.d" => spec(FmsubD, "DSTrM"),
        "fnmsub.d" => spec(FnmsubD, "DSTrM"),
        "fnmadd.d" => spec(FnmaddD, "DSTrM"),
        "fadd.d" => spec(FaddD, "DSTM"),
        "fsub.d" => spec(FsubD, "DSTM"),
        "fmul.d" => spec(FmulD, "DSTM"),
        "fdiv.d" => spec(FdivD, "DSTM"),
        "fsqrt.d" => spec(FsqrtD, "DSM"),
        "fsgnj.d" => spec(FsgnjD, "DST"),
        "fsgnjn.d" => spec(FsgnjnD, "DST"),
        "fsgnjx.d" => spec(FsgnjxD, "DST"),
        "fmin.d" => spec(FminD, "DST"),
        "fmax.d" => spec(FmaxD, "DST"),
        "fcvt.s.d" => spec(FcvtSD, "DSM"),
        "fcvt.d.s" => spec(FcvtDS, "DSN"),
        "fcvt.w.d" => spec(FcvtWD, "dSM"),
        "fcvt.wu.d" => spec(FcvtWuD, "dSM"),
        "fcvt.l.d" => spec(FcvtLD, "dSM"),
        "fcvt.lu.d" => spec(FcvtLuD, "dSM"),
        "fmv.x.d" => spec(FmvXD, "dS"),
        "feq.d" => spec(FeqD, "dST"),
        "flt.d" => spec(FltD, "dST"),
        "fle.d" => spec(FleD, "dST"),
        "fclass.d" => spec(FclassD, "dS"),
        "fcvt.d.w" => spec(FcvtDW, "DsN"),
        "fcvt.d.wu" => spec(FcvtDWu, "DsN"),
        "fcvt.d.l" => spec(FcvtDL, "DsM"),
        "fcvt.d.lu" => spec(FcvtDLu, "DsM"),
        "fmv.d.x" => spec(FmvDX, "Ds"),
        // ---- RVC, as their expansions ----
        "c.addi4spn" => spec(Addi, "dsi"),
        "c.fld" => spec(Fld, "Dm"),
        "c.lw" => spec(Lw, "dm"),
        "c.ld" => spec(Ld, "dm"),
        "c.fsd" => spec(Fsd, "Tm"),
        "c.sw" => spec(Sw, "tm"),
        "c.sd" => spec(Sd, "tm"),
        "c.nop" => x(Addi).map(|(exp, s)| (Exp { rd: Z, ..exp }, s)),
        "c.addi" => spec(Addi, "Bi"),
        "c.addiw" => spec(Addiw, "Bi"),
        "c.li" => spec(Addi, "di"),
        "c.addi16sp" => spec(Addi, "Bi"),
        "c.lui" => spec(Lui, "du"),
        "c.srli" => spec(Srli, "Bi"),
        "c.srai" => spec(Srai, "Bi"),
        // RV128's shift-by-64 spellings of the shamt = 0 HINTs.
        "c.srli64" => spec(Srli, "B"),
        "c.srai64" => spec(Srai, "B"),
        "c.slli64" => spec(Slli, "B"),
        "c.andi" => spec(Andi, "Bi"),
        "c.sub" => spec(Sub, "Bt"),
        "c.xor" => spec(Xor, "Bt"),
        "c.or" => spec(Or, "Bt"),
        "c.and" => spec(And, "Bt"),
        "c.subw" => spec(Subw, "Bt"),
        "c.addw" => spec(Addw, "Bt"),
        "c.j" => Some((Exp { rd: Z, ..e(Jal) }, "b")),
        "c.beqz" => spec(Beq, "sb"),
        "c.bnez" => spec(Bne, "sb"),
        "c.slli" => spec(Slli, "Bi"),
        "c.fldsp" => spec(Fld, "Dm"),
        "c.lwsp" => spec(Lw, "dm"),
        "c.ldsp" => spec(Ld, "dm"),
        "c.jr" => Some((Exp { rd: Z, ..e(Jalr) }, "s")),
        "c.jalr" => Some((Exp { rd: 1, ..e(Jalr) }, "s")),
        "c.mv" => spec(Add, "dt"),
        "c.add" => spec(Add, "Bt"),
        "c.ebreak" => x(Ebreak),
        "c.fsdsp" => spec(Fsd, "Tm"),
        "c.swsp" => spec(Sw, "tm"),
        "c.sdsp" => spec(Sd, "tm"),
        _ => None,
    }
}

fn parse_reg(text: &str, class: char) -> u8 {
    let n = text
        .strip_prefix(class)
        .and_then(|n| n.parse::<u8>().ok())
        .unwrap_or_else(|| panic!("expected an {class} register, got `{text}`"));
    assert!(n < 32, "register `{text}`");
    n
}

fn parse_int(text: &str) -> i64 {
    let (neg, t) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let v = match t.strip_prefix("0x") {
        Some(h) => i64::from_str_radix(h, 16),
        None => t.parse::<i64>(),
    }
    .unwrap_or_else(|_| panic!("bad number `{text}`"));
    if neg {
        -v
    } else {
        v
    }
}

/// What objdump's line says the decoder must produce: `None` = illegal, `Some((exp, check_imm))`.
fn objdump_expect(dis: &Dis) -> Option<(Exp, bool)> {
    if dis.mnem.starts_with('.') || dis.mnem == "c.unimp" {
        return None;
    }
    // Instructions binutils knows that this hart does not implement: the N extension's uret
    // the debug-mode dret, and privileged-spec 1.9 leftovers (hret, sfence.vm).
    // Svinval's supervisor instructions are not implemented either.
    if matches!(
        dis.mnem.as_str(),
        "uret"
            | "dret"
            | "hret"
            | "sfence.vm"
            | "sinval.vma"
            | "sfence.w.inval"
            | "sfence.inval.ir"
    ) {
        return None;
    }
    let (mut exp, roles) = objdump_spec(&dis.mnem)
        .unwrap_or_else(|| panic!("objdump mnemonic `{}` has no spec", dis.mnem));
    let mut check_imm = true;
    let mut ops = dis.ops.iter();
    for role in roles.chars() {
        if role == '*' {
            check_imm = false;
            break;
        }
        let op = ops.next();
        if matches!(role, 'M' | 'N') {
            exp.rm = match op.map(String::as_str) {
                None => {
                    if role == 'M' {
                        7
                    } else {
                        0
                    }
                }
                Some("rne") => 0,
                Some("rtz") => 1,
                Some("rdn") => 2,
                Some("rup") => 3,
                Some("rmm") => 4,
                Some("dyn") => 7,
                // A reserved rounding mode (5 or 6): illegal.
                Some("unknown") => return None,
                Some(other) => panic!("unknown rounding mode `{other}`"),
            };
            continue;
        }
        let op = op
            .unwrap_or_else(|| panic!("missing operand for `{}`", dis.mnem))
            .as_str();
        let sink = |r: u8| if r == 0 { Z } else { r };
        match role {
            'd' => exp.rd = sink(parse_reg(op, 'x')),
            'D' => exp.rd = parse_reg(op, 'f'),
            'B' => {
                let r = parse_reg(op, 'x');
                exp.rd = sink(r);
                exp.rs1 = r;
            }
            's' => exp.rs1 = parse_reg(op, 'x'),
            'S' => exp.rs1 = parse_reg(op, 'f'),
            't' => exp.rs2 = parse_reg(op, 'x'),
            'T' => exp.rs2 = parse_reg(op, 'f'),
            'r' => exp.rs3 = parse_reg(op, 'f'),
            'i' => exp.imm = parse_int(op) as i32,
            'u' => exp.imm = ((parse_int(op) as u32) << 12) as i32,
            'b' => {
                let target = u64::from_str_radix(op, 16).expect("branch target");
                exp.imm = target.wrapping_sub(dis.addr) as i32;
            }
            'm' | 'A' => {
                let (imm, reg) = op
                    .split_once('(')
                    .unwrap_or_else(|| panic!("memory operand `{op}` in `{}`", dis.mnem));
                exp.rs1 = parse_reg(reg.strip_suffix(')').expect("memory operand"), 'x');
                if role == 'm' {
                    exp.imm = parse_int(imm) as i32;
                }
            }
            'c' => {
                if op.starts_with("0x") {
                    exp.imm = parse_int(op) as i32;
                } else {
                    check_imm = false; // a CSR name
                }
            }
            'z' => exp.rs1 = parse_int(op) as u8,
            _ => unreachable!("role {role}"),
        }
    }
    if check_imm {
        assert!(
            ops.next().is_none(),
            "extra operands in `{} {:?}`",
            dis.mnem,
            dis.ops
        );
    }
    // c.addi16sp with a zero immediate is reserved (binutils 2.40 disassembles it anyway).
    if dis.mnem == "c.addi16sp" && exp.imm == 0 {
        return None;
    }
    Some((exp, check_imm))
}

/// Compare the decoder with objdump over `words`; `known` says whether a disagreement where
/// only the decoder accepts the encoding is a documented, deliberate one.
fn cross_check(
    name: &str,
    march: &str,
    words: &[u32],
    known: impl Fn(&Inst) -> bool,
) -> (usize, usize) {
    let parcels: Vec<(u32, u32)> = words
        .iter()
        .map(|&w| (if w & 3 == 3 { 4 } else { 2 }, w))
        .collect();
    let dis = objdump(name, march, &parcels);
    let mut pc = 0u64;
    let mut failures = String::new();
    let mut nfail = 0;
    let (mut legal, mut known_diffs) = (0, 0);
    for (&(len, word), d) in parcels.iter().zip(&dis) {
        assert_eq!(d.addr, pc, "objdump is out of step at {word:#x}");
        pc += u64::from(len);
        let got = decode(word);
        // Zihintpause's `pause` (not in `march`, so binutils shows the plain `fence w,0`, which
        // it cannot tell apart from the same fence with rd or rs1 set).
        let want = if word == 0x0100_000f {
            Some((e(Op::Pause), true))
        } else {
            objdump_expect(d)
        };
        let ok = match want {
            None if got.op == Op::Illegal => true,
            None if known(&got) => {
                known_diffs += 1;
                true
            }
            None => false,
            Some((mut exp, check_imm)) => {
                if !check_imm {
                    exp.imm = got.imm;
                }
                legal += 1;
                Exp::of(&got) == exp && got.raw == word
            }
        };
        if !ok {
            nfail += 1;
            if nfail <= 40 {
                writeln!(
                    failures,
                    "  {word:#010x}: objdump `{} {}`\n    want {:?}\n    got  {got:?}",
                    d.mnem,
                    d.ops.join(","),
                    want.map(|w| w.0)
                )
                .unwrap();
            }
        }
    }
    assert!(
        nfail == 0,
        "{name}: {nfail} disagreements with objdump:\n{failures}"
    );
    (legal, known_diffs)
}

/// All 49152 compressed parcels against objdump.
#[test]
fn decode_all_compressed_against_objdump() {
    let words: Vec<u32> = (0..=0xffffu32).filter(|w| w & 3 != 3).collect();
    // The decoder and binutils 2.40 agree on every parcel (c.addi16sp 0 is handled in
    // `objdump_expect`), so there are no known differences here.
    let (legal, known) = cross_check("all-rvc", MARCH_GC, &words, |_| false);
    assert_eq!(known, 0);
    // 49152 parcels minus the 2409 reserved ones.
    assert_eq!(legal, 46_743);
}

/// A deterministic xorshift generator for the 32-bit sample.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }
}

/// 32-bit words around every assembled instruction (fields randomised, single bits flipped)
/// plus random words, against objdump.
#[test]
fn decode_32bit_sample_against_objdump() {
    let mut src = String::from(".option norvc\n");
    for (asm, _) in uncompressed_list().iter().chain(hypervisor_list().iter()) {
        writeln!(src, "{asm}").unwrap();
    }
    let bytes = assemble("rv64g-seeds", MARCH_H, &src);
    let seeds: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    const MASKS: [u32; 11] = [
        0x0000_0f80, // rd
        0x000f_8000, // rs1
        0x01f0_0000, // rs2
        0xfff0_0000, // I-immediate
        0xfe00_0f80, // S/B-immediate
        0xffff_f000, // U/J-immediate
        0x0000_7000, // funct3
        0xfe00_0000, // funct7
        0xf800_0000, // funct5 / rs3
        0x0600_0000, // fmt / aq-rl
        0xffff_ff80, // everything but the opcode
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut words = Vec::new();
    for &seed in &seeds {
        for _ in 0..160 {
            let mask = MASKS[rng.next() as usize % MASKS.len()];
            let mut w = (seed & !mask) | (rng.next() & mask);
            if rng.next() % 4 == 0 {
                w ^= 1 << (7 + rng.next() % 25);
            }
            words.push(w);
        }
    }
    while words.len() < seeds.len() * 160 + 30_000 {
        let w = rng.next() | 3;
        if w & 0x1c != 0x1c {
            words.push(w);
        }
    }
    let (legal, known) = cross_check("rv64g-sample", MARCH_HC, &words, |inst| match inst.op {
        // The spec makes implementations ignore FENCE's rd/rs1 and reserved fm values, and
        // FENCE.I's imm/rs1/rd; binutils only disassembles the all-zero forms.
        Op::Fence | Op::FenceI | Op::Pause => true,
        // binutils 2.40 only disassembles rm = RNE for these (the rm field is still there).
        Op::FcvtDS | Op::FcvtDW | Op::FcvtDWu => inst.rm != 0,
        _ => false,
    });
    assert!(
        legal > words.len() / 3,
        "sample too sparse: {legal} legal of {}",
        words.len()
    );
    eprintln!(
        "32-bit sample: {} words, {legal} legal, {known} known differences",
        words.len()
    );
}

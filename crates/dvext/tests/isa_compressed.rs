//! RV64C: a program written with explicit compressed instructions computes exactly what the
//! same program written with their 32-bit expansions computes; compressed link values; and
//! 32-bit instructions that straddle a page boundary (possible once code is 2-byte aligned).

mod common;

use common::*;
use dvext::csr::{cause, UEPC};
use dvext::Exit;

/// (compressed form, 32-bit expansion). Registers x8..x15 where the C format needs them.
const BODY: &[(&str, &str)] = &[
    ("c.li a0, -5", "addi a0, zero, -5"),
    ("c.li a1, 31", "addi a1, zero, 31"),
    ("c.addi a0, 7", "addi a0, a0, 7"),
    ("c.lui a2, 0xfffff", "lui a2, 0xfffff"),
    ("c.lui a3, 1", "lui a3, 1"),
    ("c.addiw a1, -1", "addiw a1, a1, -1"),
    ("c.mv a4, a2", "add a4, zero, a2"),
    ("c.add a4, a3", "add a4, a4, a3"),
    ("c.slli a2, 4", "slli a2, a2, 4"),
    ("c.mv a5, a2", "add a5, zero, a2"),
    ("c.srli a5, 40", "srli a5, a5, 40"),
    ("c.srai a2, 8", "srai a2, a2, 8"),
    ("c.andi a1, 0x1c", "andi a1, a1, 0x1c"),
    ("c.andi a3, -1", "andi a3, a3, -1"),
    ("c.mv s1, a0", "add s1, zero, a0"),
    ("c.sub s1, a1", "sub s1, s1, a1"),
    ("c.xor a0, a1", "xor a0, a0, a1"),
    ("c.or a5, a0", "or a5, a5, a0"),
    ("c.and a3, a5", "and a3, a3, a5"),
    ("c.subw a2, a1", "subw a2, a2, a1"),
    ("c.addw a0, a2", "addw a0, a0, a2"),
    ("c.sw a0, 0(s0)", "sw a0, 0(s0)"),
    ("c.sd a2, 8(s0)", "sd a2, 8(s0)"),
    ("c.lw a5, 0(s0)", "lw a5, 0(s0)"),
    ("c.ld s1, 8(s0)", "ld s1, 8(s0)"),
    ("c.swsp a2, 16(sp)", "sw a2, 16(sp)"),
    ("c.sdsp a3, 24(sp)", "sd a3, 24(sp)"),
    ("c.lwsp t0, 16(sp)", "lw t0, 16(sp)"),
    ("c.ldsp t1, 24(sp)", "ld t1, 24(sp)"),
    ("c.addi16sp sp, -32", "addi sp, sp, -32"),
    ("c.addi4spn a4, sp, 16", "addi a4, sp, 16"),
    ("c.fld fa0, 8(s0)", "fld fa0, 8(s0)"),
    ("c.fsd fa0, 16(s0)", "fsd fa0, 16(s0)"),
    ("c.fldsp ft1, 64(sp)", "fld ft1, 64(sp)"),
    ("c.fsdsp ft1, 40(sp)", "fsd ft1, 40(sp)"),
    ("c.nop", "addi zero, zero, 0"),
    ("c.slli s1, 61", "slli s1, s1, 61"),
    ("c.srai s1, 63", "srai s1, s1, 63"),
    ("c.li a5, 0", "addi a5, zero, 0"),
    ("c.beqz a5, 1f", "beq a5, zero, 1f"),
    ("c.li t2, 1", "addi t2, zero, 1"),
    ("1: c.bnez a5, 2f", "1: bne a5, zero, 2f"),
    ("c.li t3, 9", "addi t3, zero, 9"),
    ("2: c.j 3f", "2: jal zero, 3f"),
    ("c.li t4, 1", "addi t4, zero, 1"),
    ("3: la t5, 4f", "3: la t5, 4f"),
    ("jsite: c.jalr t5", "jsite: jalr ra, 0(t5)"),
    ("c.li s2, 1", "addi s2, zero, 1"),
    ("4: la t6, jsite", "4: la t6, jsite"),
    ("sub ra, ra, t6", "sub ra, ra, t6"),
    ("la t5, 5f", "la t5, 5f"),
    ("c.jr t5", "jalr zero, 0(t5)"),
    ("c.li s3, 1", "addi s3, zero, 1"),
    ("5: c.bnez a0, 6f", "5: bne a0, zero, 6f"),
    ("c.li s4, 1", "addi s4, zero, 1"),
    ("6: c.mv s5, sp", "6: add s5, zero, sp"),
];

fn run_variant(compressed: bool) -> (TestVm, usize) {
    let mut src = String::from(
        "
        li sp, 0x80101000
        li s0, 0x80100000
        li t0, 0x400921fb54442d18
        sd t0, 0x20(sp)       # becomes 64(sp) after c.addi16sp -32
        ",
    );
    if !compressed {
        src.push_str(".option norvc\n");
    }
    for (c, full) in BODY {
        src.push_str(if compressed { c } else { full });
        src.push('\n');
    }
    src.push_str("ecall\n");
    let len = assemble(&src).len();
    let mut vm = TestVm::with_program(&src);
    vm.run_to_ecall();
    (vm, len)
}

#[test]
fn compressed_program_matches_its_expansion() {
    let (c, clen) = run_variant(true);
    let (u, ulen) = run_variant(false);
    assert!(
        clen + 80 <= ulen,
        "the compressed variant really is compressed ({clen} vs {ulen} bytes)"
    );
    for reg in 1..32 {
        if matches!(reg, r::RA | r::T5 | r::T6) {
            continue; // code addresses differ between the two layouts
        }
        assert_eq!(c.x(reg), u.x(reg), "x{reg} differs");
    }
    for reg in 0..32 {
        assert_eq!(c.f(reg), u.f(reg), "f{reg} differs");
    }
    assert_eq!(c.read(DATA, 0x1100), u.read(DATA, 0x1100), "memory differs");

    // And the values themselves (hand-computed from the expansion).
    assert_eq!(u.x(r::A1), 28);
    assert_eq!(u.x(r::A4), 0x8010_0ff0, "c.addi4spn after c.addi16sp");
    assert_eq!(u.x(r::SP), 0x8010_0fe0);
    assert_eq!(u.x(r::S5), 0x8010_0fe0);
    assert_eq!(
        u.x(r::T0),
        u.x(r::A2) as u32 as i32 as i64 as u64,
        "c.lwsp sign-extends"
    );
    assert_eq!(u.f(1), 0x4009_21fb_5444_2d18, "c.fldsp");
    assert_eq!(u.f(10), 0xffff_ffff_ffff_fee4, "c.fld");
    assert_eq!(u.x(r::A0), 0xffff_ffff_ffff_ff02, "c.addw");
    assert_eq!(u.x(r::A5), 0, "c.li");
    assert_eq!(u.x(r::A3), 0x1000);
    assert_eq!(u.x(r::T1), 0x1000, "c.ldsp");
    assert_eq!(u.x(r::S4), 0, "c.bnez taken");
    assert_eq!(u.x(r::T2), 0, "c.beqz taken");
    assert_eq!(u.x(r::T3), 9, "c.bnez not taken");
    assert_eq!(u.x(r::T4), 0, "c.j");
    assert_eq!(u.x(r::S2), 0, "c.jalr");
    assert_eq!(u.x(r::S3), 0, "c.jr");
    // Link values: pc + 2 for c.jalr, pc + 4 for jalr.
    assert_eq!(c.x(r::RA), 2);
    assert_eq!(u.x(r::RA), 4);
    assert_eq!(c.x(r::S1), u64::MAX);
}

#[test]
fn c_ebreak_reports_its_own_pc_and_length() {
    let mut vm = TestVm::with_program(
        "
        c.li a0, 1
        c.ebreak
        c.addi a0, 1
        ecall
        ",
    );
    let e = vm.run();
    assert_eq!(
        e,
        Exit::Trap {
            cause: cause::BREAKPOINT,
            tval: RAM_GPA + 2,
            htval: 0,
            htinst: 0
        }
    );
    assert_eq!(vm.csr(UEPC), RAM_GPA + 2);
    vm.set_csr(UEPC, RAM_GPA + 4);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 2);
}

#[test]
fn illegal_compressed_instruction_reports_16_bits() {
    // 0x0000 is the defined-illegal compressed instruction; c.addi4spn with a zero immediate
    // (0x0004 with rd'=x9) is reserved.
    for (word, tval) in [("0x0000", 0u64), ("0x0004", 4)] {
        let mut vm = TestVm::with_program(&format!(
            "
            c.nop
            .2byte {word}
            ecall
            "
        ));
        let e = vm.run();
        assert_eq!(
            e,
            Exit::Trap {
                cause: cause::ILLEGAL_INST,
                tval,
                htval: 0,
                htinst: 0
            },
            "{word}"
        );
        assert_eq!(vm.csr(UEPC), RAM_GPA + 2);
    }
}

#[test]
fn instructions_straddling_page_boundaries() {
    // A 32-bit instruction at 0x...ffe runs off the end of its page into the next; these are
    // fetched through both translations and run in a loop to exercise them repeatedly.
    let mut vm = TestVm::with_program(
        "
        .option norvc
        li a2, 10
        li a3, 0
        j 1f
        .org 0xffc
    1:  .2byte 0x0001            # c.nop at 0xffc
        addi a0, zero, 1234      # 0xffe .. 0x1001
        addi a1, a0, 1
        addi a3, a3, 1
        j 3f
        .org 0x1ffc
    3:  .2byte 0x0001            # c.nop at 0x1ffc
        addi a2, a2, -1          # 0x1ffe: straddles again
        .2byte 0x0001
        bne a2, zero, 1b         # 0x2004
        j 4f
        .org 0x2ffe
    4:  jal s0, 2f               # a straddling jump
    2:  la s1, 2b
        ecall
        ",
    );
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 1234);
    assert_eq!(vm.x(r::A1), 1235);
    assert_eq!(vm.x(r::A2), 0);
    assert_eq!(vm.x(r::A3), 10);
    assert_eq!(vm.x(r::S0), RAM_GPA + 0x3002, "link of the straddling jal");
    assert_eq!(vm.x(r::S1), RAM_GPA + 0x3002);
}

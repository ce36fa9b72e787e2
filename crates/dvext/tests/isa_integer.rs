//! RV64I against the unprivileged ISA manual: every operation, with the edge cases the manual
//! spells out (shift amounts, W-form sign extension, signed/unsigned compares, link values,
//! load extension, misaligned accesses, which this hart performs in hardware).

mod common;

use common::*;
use dvext::csr::{cause, UEPC};
use dvext::Exit;

const MIN: &str = "0x8000000000000000";
const MAX: &str = "0x7fffffffffffffff";

#[test]
fn register_register_ops() {
    let c = |s: &str| s.replace("MIN", MIN).replace("MAX", MAX);
    let cases: Vec<(String, u64)> = vec![
        (
            c("li a1, MAX; li a2, 1; add a0, a1, a2"),
            0x8000_0000_0000_0000,
        ),
        (c("li a1, -1; li a2, 2; add a0, a1, a2"), 1),
        (c("li a1, 0; li a2, 1; sub a0, a1, a2"), u64::MAX),
        (
            c("li a1, MIN; li a2, 1; sub a0, a1, a2"),
            0x7fff_ffff_ffff_ffff,
        ),
        (c("li a1, 1; li a2, 63; sll a0, a1, a2"), 1 << 63),
        // Only the low six bits of rs2 count.
        (c("li a1, 1; li a2, 65; sll a0, a1, a2"), 2),
        (c("li a1, 1; li a2, 64; sll a0, a1, a2"), 1),
        (c("li a1, 3; li a2, -1; sll a0, a1, a2"), 1 << 63),
        (c("li a1, -1; li a2, 60; srl a0, a1, a2"), 0xf),
        (c("li a1, -1; li a2, 124; srl a0, a1, a2"), 0xf),
        (c("li a1, MIN; li a2, 63; sra a0, a1, a2"), u64::MAX),
        (c("li a1, -256; li a2, 4; sra a0, a1, a2"), -16i64 as u64),
        (c("li a1, -256; li a2, 68; sra a0, a1, a2"), -16i64 as u64),
        (c("li a1, MAX; li a2, 62; sra a0, a1, a2"), 1),
        (c("li a1, -1; li a2, 1; slt a0, a1, a2"), 1),
        (c("li a1, 1; li a2, -1; slt a0, a1, a2"), 0),
        (c("li a1, 5; li a2, 5; slt a0, a1, a2"), 0),
        (c("li a1, MIN; li a2, MAX; slt a0, a1, a2"), 1),
        (c("li a1, MAX; li a2, MIN; slt a0, a1, a2"), 0),
        (c("li a1, -1; li a2, 1; sltu a0, a1, a2"), 0),
        (c("li a1, 1; li a2, -1; sltu a0, a1, a2"), 1),
        (c("li a1, MIN; li a2, MAX; sltu a0, a1, a2"), 0),
        (c("li a2, 5; sltu a0, zero, a2"), 1),
        (c("sltu a0, zero, zero"), 0),
        (
            c("li a1, 0xff00ff00ff00ff00; li a2, 0x0ff00ff00ff00ff0; xor a0, a1, a2"),
            0xf0f0_f0f0_f0f0_f0f0,
        ),
        (
            c("li a1, 0xff00ff00ff00ff00; li a2, 0x0ff00ff00ff00ff0; or a0, a1, a2"),
            0xfff0_fff0_fff0_fff0,
        ),
        (
            c("li a1, 0xff00ff00ff00ff00; li a2, 0x0ff00ff00ff00ff0; and a0, a1, a2"),
            0x0f00_0f00_0f00_0f00,
        ),
    ];
    let cases: Vec<(&str, u64)> = cases.iter().map(|(s, v)| (s.as_str(), *v)).collect();
    check_cases("", &cases);
}

#[test]
fn register_immediate_ops() {
    check_cases(
        "",
        &[
            ("li a1, 5; addi a0, a1, -6", u64::MAX),
            ("addi a0, zero, 2047", 2047),
            ("addi a0, zero, -2048", 0xffff_ffff_ffff_f800),
            ("li a1, -5; slti a0, a1, -4", 1),
            ("li a1, -5; slti a0, a1, -5", 0),
            ("li a1, 5; slti a0, a1, -5", 0),
            // sltiu sign-extends the immediate, then compares unsigned.
            ("li a1, 5; sltiu a0, a1, -1", 1),
            ("li a1, -1; sltiu a0, a1, -1", 0),
            ("li a1, -2; sltiu a0, a1, -1", 1),
            ("sltiu a0, zero, 1", 1),
            ("li a1, 7; sltiu a0, a1, 1", 0),
            ("li a1, 0x1234; xori a0, a1, -1", !0x1234u64),
            (
                "li a1, 0x100000000; ori a0, a1, -2048",
                0xffff_ffff_ffff_f800,
            ),
            ("li a1, 0x100000000; ori a0, a1, 0x7ff", 0x1_0000_07ff),
            ("li a1, -1; andi a0, a1, 0x7ff", 0x7ff),
            ("li a1, -1; andi a0, a1, -2048", 0xffff_ffff_ffff_f800),
            ("li a1, 1; slli a0, a1, 63", 1 << 63),
            ("li a1, 0x123; slli a0, a1, 0", 0x123),
            ("li a1, -1; srli a0, a1, 63", 1),
            ("li a1, -1; srli a0, a1, 0", u64::MAX),
            ("li a1, -1; srli a0, a1, 32", 0xffff_ffff),
            (
                "li a1, 0x8000000000000000; srai a0, a1, 62",
                0xffff_ffff_ffff_fffe,
            ),
            ("li a1, 0x4000000000000000; srai a0, a1, 62", 1),
        ],
    );
}

#[test]
fn word_ops_sign_extend_and_mask_shifts() {
    check_cases(
        "",
        &[
            (
                "li a1, 0x7fffffff; li a2, 1; addw a0, a1, a2",
                0xffff_ffff_8000_0000,
            ),
            // The upper halves of the sources are ignored.
            (
                "li a1, 0x1234567800000001; li a2, 0xabcdef0000000002; addw a0, a1, a2",
                3,
            ),
            ("li a1, 0; li a2, 1; subw a0, a1, a2", u64::MAX),
            ("li a1, 0x80000000; li a2, 1; subw a0, a1, a2", 0x7fff_ffff),
            ("li a1, 0x7fffffff; addiw a0, a1, 1", 0xffff_ffff_8000_0000),
            ("li a1, 0xffffffff; addiw a0, a1, 0", u64::MAX),
            ("li a1, 0x1ffffffff; addiw a0, a1, 2", 1),
            (
                "li a1, 1; li a2, 31; sllw a0, a1, a2",
                0xffff_ffff_8000_0000,
            ),
            // W shifts use only the low five bits of rs2.
            ("li a1, 1; li a2, 33; sllw a0, a1, a2", 2),
            ("li a1, 1; li a2, 32; sllw a0, a1, a2", 1),
            (
                "li a1, 0xffffffff80000000; li a2, 0; srlw a0, a1, a2",
                0xffff_ffff_8000_0000,
            ),
            (
                "li a1, 0xffffffff80000000; li a2, 1; srlw a0, a1, a2",
                0x4000_0000,
            ),
            (
                "li a1, 0xffffffff80000000; li a2, 33; srlw a0, a1, a2",
                0x4000_0000,
            ),
            ("li a1, -1; li a2, 31; srlw a0, a1, a2", 1),
            (
                "li a1, 0x80000000; li a2, 1; sraw a0, a1, a2",
                0xffff_ffff_c000_0000,
            ),
            (
                "li a1, 0x80000000; li a2, 35; sraw a0, a1, a2",
                0xffff_ffff_f000_0000,
            ),
            (
                "li a1, 0xffffffff7fffffff; li a2, 4; sraw a0, a1, a2",
                0x07ff_ffff,
            ),
            ("li a1, 3; slliw a0, a1, 31", 0xffff_ffff_8000_0000),
            ("li a1, 0x100000001; slliw a0, a1, 0", 1),
            ("li a1, -1; srliw a0, a1, 4", 0x0fff_ffff),
            ("li a1, -1; srliw a0, a1, 0", u64::MAX),
            ("li a1, 0x80000000; sraiw a0, a1, 31", u64::MAX),
            ("li a1, 0x100000000; sraiw a0, a1, 1", 0),
            ("li a1, 0x7fff0000; sraiw a0, a1, 16", 0x7fff),
        ],
    );
}

#[test]
fn lui_and_auipc() {
    let mut vm = TestVm::with_program(
        "
        .option norvc
        auipc a0, 0          # 0x80000000
        auipc a1, 1          # 0x80000004
        auipc a2, 0xfffff    # 0x80000008
        lui a3, 0x80000
        lui a4, 0x7ffff
        lui a5, 1
        auipc a6, 0x80000    # 0x80000018
        lui a7, 0
        ecall
        ",
    );
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 0x8000_0000);
    assert_eq!(vm.x(r::A1), 0x8000_1004);
    assert_eq!(vm.x(r::A2), 0x7fff_f008);
    assert_eq!(vm.x(r::A3), 0xffff_ffff_8000_0000, "lui sign-extends");
    assert_eq!(vm.x(r::A4), 0x7fff_f000);
    assert_eq!(vm.x(r::A5), 0x1000);
    assert_eq!(vm.x(r::A6), 0x18, "auipc wraps with a negative offset");
    assert_eq!(vm.x(r::A7), 0);
    assert_eq!(vm.csr(UEPC), 0x8000_0020);
}

#[test]
fn jal_and_jalr_link_values_and_bit0() {
    let mut vm = TestVm::with_program(
        "
        .option norvc
        jal ra, 1f           # 0x00: ra = 0x04
        li a0, 1             # 0x04: skipped
    1:  mv s0, ra            # 0x08
        auipc t0, 0          # 0x0c
        addi t0, t0, 0x15    # 0x10: t0 = 0x21 (label 2 at 0x20, plus bit 0)
        jalr s1, 0(t0)       # 0x14: s1 = 0x18, bit 0 of the target cleared
        li a1, 1             # 0x18: skipped
        li a1, 1             # 0x1c: skipped
    2:  auipc t1, 0          # 0x20
        jalr t1, 13(t1)      # 0x24: rd == rs1: target (0x20 + 13) & ~1 = 0x2c, t1 = 0x28
        li a2, 1             # 0x28: skipped
        jal zero, 3f         # 0x2c: no link
        li a3, 1             # 0x30: skipped
    3:  auipc t2, 0          # 0x34
        addi t2, t2, 20      # 0x38: t2 = 0x48
        jalr zero, -4(t2)    # 0x3c: to 0x44
        li a4, 1             # 0x40: skipped
        jal s2, 4f           # 0x44: s2 = 0x48
    4:  j 6f                 # 0x48
    5:  li a5, 0x55          # 0x4c: reached by the backward jal
        ecall                # 0x50
    6:  jal s3, 5b           # 0x54: backward, s3 = 0x58
        ",
    );
    vm.run_to_ecall();
    let b = RAM_GPA;
    assert_eq!(vm.x(r::RA), b + 0x04);
    assert_eq!(vm.x(r::S0), b + 0x04);
    assert_eq!(vm.x(r::S1), b + 0x18);
    assert_eq!(vm.x(r::T1), b + 0x28);
    assert_eq!(vm.x(r::S2), b + 0x48);
    assert_eq!(vm.x(r::S3), b + 0x58);
    assert_eq!(vm.x(r::A5), 0x55);
    for (reg, name) in [
        (r::A0, "a0"),
        (r::A1, "a1"),
        (r::A2, "a2"),
        (r::A3, "a3"),
        (r::A4, "a4"),
    ] {
        assert_eq!(vm.x(reg), 0, "{name}: a skipped instruction ran");
    }
    assert_eq!(vm.csr(UEPC), b + 0x50);
}

#[test]
fn branches_taken_and_not_taken() {
    // Each case yields 2 if the branch is taken, 1 if not.
    let table: &[(&str, &str, &str, bool)] = &[
        ("beq", "5", "5", true),
        ("beq", "5", "6", false),
        ("beq", "-1", "0xffffffffffffffff", true),
        ("bne", "5", "6", true),
        ("bne", "5", "5", false),
        ("blt", "-1", "1", true),
        ("blt", "1", "-1", false),
        ("blt", "5", "5", false),
        ("blt", MIN, MAX, true),
        ("bge", "1", "-1", true),
        ("bge", "-1", "1", false),
        ("bge", "5", "5", true),
        ("bge", MIN, MAX, false),
        ("bltu", "1", "-1", true),
        ("bltu", "-1", "1", false),
        ("bltu", "5", "5", false),
        ("bgeu", "-1", "1", true),
        ("bgeu", "1", "-1", false),
        ("bgeu", "5", "5", true),
        ("bgeu", "0", "0", true),
    ];
    let srcs: Vec<(String, u64)> = table
        .iter()
        .map(|(op, a, b, taken)| {
            (
                format!("li a1, {a}; li a2, {b}; {op} a1, a2, 1f; li a0, 1; j 2f; 1: li a0, 2; 2:"),
                if *taken { 2 } else { 1 },
            )
        })
        .chain([(
            // A backward branch loop.
            "li a0, 0; li a1, 10; 1: addi a0, a0, 3; addi a1, a1, -1; bnez a1, 1b".to_owned(),
            30,
        )])
        .collect();
    let cases: Vec<(&str, u64)> = srcs.iter().map(|(s, v)| (s.as_str(), *v)).collect();
    check_cases("", &cases);
}

/// s10 = DATA + 0x8000 holding 87 86 85 84 83 82 81 80 | 78 79 7a 7b 7c 7d 7e 7f.
const LOAD_PRELUDE: &str = "
    li s10, 0x80108000
    li t0, 0x8081828384858687
    sd t0, 0(s10)
    li t0, 0x7f7e7d7c7b7a7978
    sd t0, 8(s10)
";

#[test]
fn loads_sign_and_zero_extend() {
    check_cases(
        LOAD_PRELUDE,
        &[
            ("lb a0, 0(s10)", 0xffff_ffff_ffff_ff87),
            ("lbu a0, 0(s10)", 0x87),
            ("lb a0, 8(s10)", 0x78),
            ("lbu a0, 15(s10)", 0x7f),
            ("lh a0, 0(s10)", 0xffff_ffff_ffff_8687),
            ("lhu a0, 0(s10)", 0x8687),
            ("lh a0, 6(s10)", 0xffff_ffff_ffff_8081),
            ("lh a0, 8(s10)", 0x7978),
            ("lw a0, 0(s10)", 0xffff_ffff_8485_8687),
            ("lwu a0, 0(s10)", 0x8485_8687),
            ("lw a0, 4(s10)", 0xffff_ffff_8081_8283),
            ("lw a0, 8(s10)", 0x7b7a_7978),
            ("lwu a0, 12(s10)", 0x7f7e_7d7c),
            ("ld a0, 0(s10)", 0x8081_8283_8485_8687),
            ("ld a0, 8(s10)", 0x7f7e_7d7c_7b7a_7978),
            ("addi t1, s10, 16; ld a0, -16(t1)", 0x8081_8283_8485_8687),
            ("addi t1, s10, 16; lb a0, -1(t1)", 0x7f),
            // A load into x0 is performed but x0 stays zero.
            ("lw zero, 0(s10); mv a0, zero", 0),
            ("addi zero, zero, 5; mv a0, zero", 0),
            ("li t0, 7; add zero, t0, t0; add a0, zero, t0", 7),
        ],
    );
}

#[test]
fn stores_write_exactly_their_width() {
    check_cases(
        "li s10, 0x80108000; li t0, -1",
        &[
            (
                "sd t0, 16(s10); li t1, 0x1234; sb t1, 17(s10); ld a0, 16(s10)",
                0xffff_ffff_ffff_34ff,
            ),
            (
                "sd t0, 16(s10); li t1, 0x12345678; sh t1, 18(s10); ld a0, 16(s10)",
                0xffff_ffff_5678_ffff,
            ),
            (
                "sd t0, 16(s10); li t1, 0x123456789abcdef0; sw t1, 20(s10); ld a0, 16(s10)",
                0x9abc_def0_ffff_ffff,
            ),
            (
                "sd t0, 16(s10); li t1, 0x123456789abcdef0; sd t1, 16(s10); ld a0, 16(s10)",
                0x1234_5678_9abc_def0,
            ),
            (
                "sd zero, 24(s10); addi t1, s10, 32; sb t0, -1(t1); ld a0, 24(s10)",
                0xff00_0000_0000_0000,
            ),
        ],
    );
}

#[test]
fn misaligned_loads_and_stores_within_a_page() {
    check_cases(
        LOAD_PRELUDE,
        &[
            ("ld a0, 1(s10)", 0x7880_8182_8384_8586),
            ("ld a0, 7(s10)", 0x7e7d_7c7b_7a79_7880),
            ("lw a0, 3(s10)", 0xffff_ffff_8182_8384),
            ("lwu a0, 3(s10)", 0x8182_8384),
            ("lw a0, 6(s10)", 0x7978_8081),
            ("lh a0, 7(s10)", 0x7880),
            ("lh a0, 1(s10)", 0xffff_ffff_ffff_8586),
            ("lhu a0, 1(s10)", 0x8586),
            (
                "sd zero, 32(s10); sd zero, 40(s10); li t0, 0x1122334455667788; sd t0, 35(s10); ld a0, 32(s10)",
                0x4455_6677_8800_0000,
            ),
            ("ld a0, 40(s10)", 0x11_2233),
            ("li t0, 0xaabbccdd; sw t0, 41(s10); ld a0, 40(s10)", 0xaa_bbcc_dd33),
            ("li t0, 0xeeff; sh t0, 39(s10); ld a0, 32(s10)", 0xff55_6677_8800_0000),
            ("lbu a0, 40(s10)", 0xee),
        ],
    );
}

#[test]
fn misaligned_accesses_across_pages() {
    // Across a 4 KiB page inside one 2 MiB G-stage leaf (t1), and across two G-stage leaves
    // (t2 = 0x8020_0000).
    check_cases(
        "li t1, 0x80109000; li t2, 0x80200000",
        &[
            (
                "li t0, 0x0102030405060708; sd t0, -3(t1); ld a0, -8(t1)",
                0x0607_0800_0000_0000,
            ),
            ("ld a0, 0(t1)", 0x01_0203_0405),
            ("ld a0, -3(t1)", 0x0102_0304_0506_0708),
            ("lw a0, -2(t1)", 0x0405_0607),
            ("lh a0, -1(t1)", 0x0506),
            ("lwu a0, -1(t1)", 0x0304_0506),
            (
                "li t0, 0x8899aabbccddeeff; sd t0, -5(t2); ld a0, -5(t2)",
                0x8899_aabb_ccdd_eeff,
            ),
            ("ld a0, -8(t2)", 0xbbcc_ddee_ff00_0000),
            ("ld a0, 0(t2)", 0x88_99aa),
            (
                "li t0, 0xa1b2c3d4; sw t0, -1(t2); lw a0, -1(t2)",
                0xffff_ffff_a1b2_c3d4,
            ),
            ("lbu a0, 2(t2)", 0xa1),
            ("li t0, 0x9876; sh t0, -1(t2); lhu a0, -1(t2)", 0x9876),
        ],
    );
}

#[test]
fn misaligned_store_into_unmapped_page_writes_nothing() {
    // The last page of RAM is followed by an unmapped guest-physical page: the store faults
    // on its second half and must not have written the first.
    let end = RAM_GPA + RAM_SIZE;
    let mut vm = TestVm::with_program(&format!(
        "
        li t1, {end:#x}
        li t0, 0x1122334455667788
        sd t0, -3(t1)
        ecall
        "
    ));
    vm.write_u64(end - 8, 0xa5a5_a5a5_a5a5_a5a5);
    let (c, tval, htval, htinst) = TestVm::trap(vm.run());
    assert_eq!(c, cause::STORE_GUEST_PAGE_FAULT);
    assert_eq!(htval, end >> 2, "hutval names the unmapped page");
    assert!(tval == end - 3 || tval == end, "utval {tval:#x}");
    // sd t0 -> rs2 = t0 (5), funct3 3, opcode 0x23, rs1/imm cleared
    assert_eq!(htinst, (5 << 20) | (3 << 12) | 0x23);
    assert_eq!(vm.read_u64(end - 8), 0xa5a5_a5a5_a5a5_a5a5);

    // And the load variant faults the same way without touching the destination.
    let mut vm = TestVm::with_program(&format!(
        "
        li t1, {end:#x}
        li a3, 0x77
        lw a3, -2(t1)
        ecall
        "
    ));
    let (c, _, htval, htinst) = TestVm::trap(vm.run());
    assert_eq!(c, cause::LOAD_GUEST_PAGE_FAULT);
    assert_eq!(htval, end >> 2);
    assert_eq!(htinst, (13 << 7) | (2 << 12) | 0x03);
    assert_eq!(vm.x(r::A3), 0x77);
}

#[test]
fn ebreak_and_illegal_instructions_exit() {
    let mut vm = TestVm::with_program(
        "
        .option norvc
        nop
        ebreak
        .word 0x0050050b    # custom-0 opcode: no such instruction here
        ",
    );
    let e = vm.run();
    assert_eq!(
        e,
        Exit::Trap {
            cause: cause::BREAKPOINT,
            tval: RAM_GPA + 4,
            htval: 0,
            htinst: 0
        }
    );
    assert_eq!(vm.csr(UEPC), RAM_GPA + 4);
    vm.skip();
    let e = vm.run();
    assert_eq!(
        e,
        Exit::Trap {
            cause: cause::ILLEGAL_INST,
            tval: 0x0050_050b,
            htval: 0,
            htinst: 0
        }
    );
    assert_eq!(vm.csr(UEPC), RAM_GPA + 8);
}

#[test]
fn fence_and_fence_i_are_harmless() {
    check_cases(
        "",
        &[
            ("li a0, 3; fence; addi a0, a0, 1", 4),
            ("li a0, 5; fence rw, rw; fence.i; addi a0, a0, 1", 6),
            ("li a0, 9; fence w, r; fence i, o; addi a0, a0, -1", 8),
        ],
    );
}

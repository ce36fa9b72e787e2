//! RV64A: LR/SC success and failure, every AMO in W and D width (old value in rd, W results
//! sign-extended, signed vs unsigned min/max), and the misaligned-AMO exception.

mod common;

use common::*;
use dvext::csr::{cause, UEPC};
use dvext::Exit;

/// s10 = DATA + 0x8000; the W cases use the word at 0(s10) with 0xdeadbeef next to it.
const PRE: &str = "li s10, 0x80108000; li t6, 0xdeadbeef; sw t6, 4(s10)";

#[test]
fn amo_word_ops_old_value_sign_extended_and_memory_result() {
    // Memory starts at 0xfffffff0 (-16 as i32), the operand is 5.
    let ops: &[(&str, u32)] = &[
        ("amoswap.w", 5),
        ("amoadd.w", 0xffff_fff5),
        ("amoxor.w", 0xffff_fff5),
        ("amoand.w", 0),
        ("amoor.w", 0xffff_fff5),
        ("amomin.w", 0xffff_fff0),
        ("amomax.w", 5),
        ("amominu.w", 5),
        ("amomaxu.w", 0xffff_fff0),
    ];
    let mut srcs = Vec::new();
    for (op, mem) in ops {
        srcs.push((
            format!("li t0, 0xfffffff0; sw t0, 0(s10); li t1, 5; {op} a0, t1, (s10)"),
            0xffff_ffff_ffff_fff0,
        ));
        srcs.push(("lwu a0, 0(s10)".to_owned(), *mem as u64));
        srcs.push(("lwu a0, 4(s10)".to_owned(), 0xdead_beef));
    }
    // A positive old value is not sign-extended; signed min/max with both signs.
    srcs.push((
        "li t0, 0x7ffffff0; sw t0, 0(s10); li t1, -1; amomax.w a0, t1, (s10)".into(),
        0x7fff_fff0,
    ));
    srcs.push(("lwu a0, 0(s10)".into(), 0x7fff_fff0));
    srcs.push(("li t1, -1; amomaxu.w a0, t1, (s10)".into(), 0x7fff_fff0));
    srcs.push(("lw a0, 0(s10)".into(), u64::MAX));
    srcs.push(("li t1, 1; amoadd.w a0, t1, (s10)".into(), u64::MAX));
    srcs.push(("lwu a0, 0(s10)".into(), 0));
    srcs.push(("lwu a0, 4(s10)".into(), 0xdead_beef));
    // The upper half of rs2 is ignored by W AMOs.
    srcs.push((
        "sw zero, 0(s10); li t1, 0x1234567800000003; amoadd.w a0, t1, (s10); lwu a0, 0(s10)".into(),
        3,
    ));
    // rd = x0: memory still updated.
    srcs.push((
        "li t1, 4; amoadd.w zero, t1, (s10); lwu a0, 0(s10)".into(),
        7,
    ));
    let cases: Vec<(&str, u64)> = srcs.iter().map(|(s, v)| (s.as_str(), *v)).collect();
    check_cases(PRE, &cases);
}

#[test]
fn amo_doubleword_ops() {
    // Memory starts at -16, the operand is 5.
    let ops: &[(&str, u64)] = &[
        ("amoswap.d", 5),
        ("amoadd.d", 0xffff_ffff_ffff_fff5),
        ("amoxor.d", 0xffff_ffff_ffff_fff5),
        ("amoand.d", 0),
        ("amoor.d", 0xffff_ffff_ffff_fff5),
        ("amomin.d", 0xffff_ffff_ffff_fff0),
        ("amomax.d", 5),
        ("amominu.d", 5),
        ("amomaxu.d", 0xffff_ffff_ffff_fff0),
    ];
    let mut srcs = Vec::new();
    for (op, mem) in ops {
        srcs.push((
            format!("li t0, -16; sd t0, 8(s10); li t1, 5; addi t2, s10, 8; {op} a0, t1, (t2)"),
            0xffff_ffff_ffff_fff0,
        ));
        srcs.push(("ld a0, 8(s10)".to_owned(), *mem));
    }
    // rd == rs2: the old value lands in rd, the old rd goes to memory.
    srcs.push((
        "li t0, 0x1111; sd t0, 8(s10); li t1, 0x2222; addi t2, s10, 8; amoswap.d t1, t1, (t2); mv a0, t1"
            .into(),
        0x1111,
    ));
    srcs.push(("ld a0, 8(s10)".into(), 0x2222));
    // 64-bit wrap-around.
    srcs.push((
        "li t0, -1; sd t0, 8(s10); li t1, 2; addi t2, s10, 8; amoadd.d a0, t1, (t2); ld a0, 8(s10)"
            .into(),
        1,
    ));
    srcs.push(("lwu a0, 4(s10)".into(), 0xdead_beef));
    let cases: Vec<(&str, u64)> = srcs.iter().map(|(s, v)| (s.as_str(), *v)).collect();
    check_cases(PRE, &cases);
}

#[test]
fn lr_sc_success_and_failure() {
    check_cases(
        "li s10, 0x80108000; addi s9, s10, 16; addi s8, s10, 24; addi s7, s10, 32; addi s6, s10, 40",
        &[
            // Success: sc writes 0 to rd and stores.
            ("li t0, 100; sd t0, 0(s9); lr.d a1, (s9); addi a1, a1, 1; sc.d a0, a1, (s9)", 0),
            ("ld a0, 0(s9)", 101),
            // lr.w sign-extends.
            ("li t0, 0x80000000; sw t0, 0(s8); lr.w a0, (s8)", 0xffff_ffff_8000_0000),
            ("li t1, 0x12345678; sc.w a0, t1, (s8)", 0),
            ("lwu a0, 0(s8)", 0x1234_5678),
            ("lwu a0, 4(s8)", 0),
            // A reservation is consumed by the sc: a second sc fails and stores nothing.
            ("li t1, 7; sc.w a0, t1, (s8)", 1),
            ("lwu a0, 0(s8)", 0x1234_5678),
            // sc without any preceding lr.
            ("li t1, 9; sc.d a0, t1, (s7)", 1),
            ("ld a0, 0(s7)", 0),
            // sc to another address than the reservation fails, and kills the reservation.
            ("li t1, 5; lr.d t4, (s7); sc.d a0, t1, (s6)", 1),
            ("ld a0, 0(s6)", 0),
            ("li t1, 5; sc.d a0, t1, (s7)", 1),
            ("ld a0, 0(s7)", 0),
            // Only one sc succeeds per lr: t5 = 0 (first), a0 = 1 (second).
            ("li t1, 6; lr.d t4, (s7); sc.d t5, t1, (s7); sc.d a0, t1, (s7); slli t5, t5, 4; or a0, a0, t5", 1),
            ("ld a0, 0(s7)", 6),
            // sc with rd = x0 still stores.
            ("li t1, 8; lr.d t4, (s7); sc.d zero, t1, (s7); ld a0, 0(s7)", 8),
            // lr.d/sc.d with aq/rl bits behave the same.
            ("lr.d.aqrl t4, (s7); addi t4, t4, 1; sc.d.rl a0, t4, (s7)", 0),
            ("ld a0, 0(s7)", 9),
        ],
    );
}

#[test]
fn misaligned_amo_is_a_store_misaligned_exit() {
    for (insn, want_cause) in [
        ("amoadd.w a0, a2, (a1)", cause::STORE_MISALIGNED),
        ("amoswap.d a0, a2, (a1)", cause::STORE_MISALIGNED),
        ("amomaxu.d a0, a2, (a1)", cause::STORE_MISALIGNED),
        ("sc.w a0, a2, (a1)", cause::STORE_MISALIGNED),
        ("lr.d a0, (a1)", cause::LOAD_MISALIGNED),
    ] {
        let addr = DATA + 0x8002;
        let mut vm = TestVm::with_program(&format!(
            "
            .option norvc
            li a1, {addr:#x}
            li a0, 0x77
            li a2, 1
            {insn}
            ecall
            "
        ));
        vm.write_u64(DATA + 0x8000, 0x0102_0304_0506_0708);
        vm.write_u64(DATA + 0x8008, 0x1112_1314_1516_1718);
        let e = vm.run();
        assert_eq!(
            e,
            Exit::Trap {
                cause: want_cause,
                tval: addr,
                htval: 0,
                htinst: 0
            },
            "{insn}"
        );
        let pc = vm.csr(UEPC);
        let word = vm.read_u32(pc);
        assert_eq!(word & 0x7f, 0x2f, "{insn}: uepc {pc:#x} points at the AMO");
        assert_eq!(vm.x(r::A0), 0x77, "{insn}: rd untouched");
        assert_eq!(vm.read_u64(DATA + 0x8000), 0x0102_0304_0506_0708, "{insn}");
        assert_eq!(vm.read_u64(DATA + 0x8008), 0x1112_1314_1516_1718, "{insn}");
    }
}

#[test]
fn misaligned_amo_can_be_delegated_to_the_guest() {
    let mut vm = TestVm::with_program(
        "
        la t0, handler
        csrw stvec, t0
        li a1, 0x80108001
        amoor.w a0, a2, (a1)
        li s1, 0x11          # not reached
        ecall
    handler:
        csrr s2, scause
        csrr s3, stval
        csrr s4, sepc
        ecall
        ",
    );
    vm.set_csr(dvext::csr::HUEDELEG, 1 << cause::STORE_MISALIGNED);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S2), cause::STORE_MISALIGNED);
    assert_eq!(vm.x(r::S3), 0x8010_8001);
    let sepc = vm.x(r::S4);
    assert_eq!(vm.read_u32(sepc) & 0x7f, 0x2f, "sepc points at the AMO");
    assert_eq!(vm.x(r::S1), 0);
}

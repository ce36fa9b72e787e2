//! F and D as seen by a guest program: NaN-boxing, fflags accrual, static and dynamic rounding,
//! conversion saturation, fmv sign extension, fcsr/frm/fflags, and the vsstatus.FS state
//! machine (Off makes every FP instruction illegal; writes make it Dirty).

mod common;

use common::*;
use dvext::csr::{cause, HUVSSTATUS, SSTATUS_FS, SSTATUS_FS_SHIFT, SSTATUS_SD, UEPC};
use dvext::Exit;

const PRE: &str = "li s10, 0x80108000";

const CNAN_S_BOXED: u64 = 0xffff_ffff_7fc0_0000;
const CNAN_D: u64 = 0x7ff8_0000_0000_0000;
const NV: u64 = 16;
const DZ: u64 = 8;
const OF: u64 = 4;
const NX: u64 = 1;

#[test]
fn nan_boxing() {
    check_cases(
        PRE,
        &[
            // Not boxed: reads as the canonical NaN.
            (
                "li t0, 0x3f800000; fmv.d.x f1, t0; fadd.s f2, f1, f1; fmv.x.d a0, f2",
                CNAN_S_BOXED,
            ),
            (
                "li t0, 0xffffffff3f800000; fmv.d.x f1, t0; fadd.s f2, f1, f1; fmv.x.d a0, f2",
                0xffff_ffff_4000_0000,
            ),
            // Partially boxed is not boxed.
            (
                "li t0, 0xfffffffe3f800000; fmv.d.x f1, t0; fsgnj.s f2, f1, f1; fmv.x.d a0, f2",
                CNAN_S_BOXED,
            ),
            (
                "li t0, 0x3f800000; fmv.d.x f1, t0; fcvt.d.s f2, f1; fmv.x.d a0, f2",
                CNAN_D,
            ),
            ("li t0, 0x3f800000; fmv.d.x f1, t0; fclass.s a0, f1", 0x200),
            ("li t0, 0x3f800000; fmv.d.x f1, t0; feq.s a0, f1, f1", 0),
            // Single-precision results and loads are boxed.
            (
                "li t0, 0x40490fdb; sw t0, 0(s10); flw f3, 0(s10); fmv.x.d a0, f3",
                0xffff_ffff_4049_0fdb,
            ),
            (
                "li t0, 0x12345678; fmv.w.x f4, t0; fmv.x.d a0, f4",
                0xffff_ffff_1234_5678,
            ),
            (
                "li t0, 0x4000000000000000; fmv.d.x f5, t0; fcvt.s.d f6, f5; fmv.x.d a0, f6",
                0xffff_ffff_4000_0000,
            ),
            // fmv.x.w moves the low 32 bits, sign-extended, boxed or not.
            (
                "li t0, 0xffffffffbf800000; fmv.d.x f5, t0; fmv.x.w a0, f5",
                0xffff_ffff_bf80_0000,
            ),
            (
                "li t0, 0x3f800000; fmv.w.x f5, t0; fmv.x.w a0, f5",
                0x3f80_0000,
            ),
            (
                "li t0, 0x1234567880000000; fmv.d.x f6, t0; fmv.x.w a0, f6",
                0xffff_ffff_8000_0000,
            ),
            // fsw stores the low 32 bits whatever the upper half holds.
            (
                "li t0, 0x1122334455667788; fmv.d.x f7, t0; fsw f7, 0(s10); lwu a0, 0(s10)",
                0x5566_7788,
            ),
            (
                "li t0, 0x1122334455667788; fmv.d.x f7, t0; fsd f7, 8(s10); ld a0, 8(s10)",
                0x1122_3344_5566_7788,
            ),
        ],
    );
}

#[test]
fn fflags_accrue() {
    check_cases(
        "li t0, 1; fcvt.d.l f1, t0; li t0, 3; fcvt.d.l f2, t0; fcvt.d.l f0, zero",
        &[
            ("csrw fflags, zero; fdiv.d f3, f1, f2; csrr a0, fflags", NX),
            ("csrw fflags, zero; fadd.d f4, f1, f1; csrr a0, fflags", 0),
            ("fmv.x.d a0, f4", 0x4000_0000_0000_0000),
            ("csrw fflags, zero; fdiv.d f6, f1, f0; csrr a0, fflags", DZ),
            ("fmv.x.d a0, f6", 0x7ff0_0000_0000_0000),
            ("csrw fflags, zero; fneg.d f7, f1; fsqrt.d f7, f7; csrr a0, fflags", NV),
            ("fmv.x.d a0, f7", CNAN_D),
            ("csrw fflags, zero; li t0, 0x7fefffffffffffff; fmv.d.x f8, t0; fmul.d f9, f8, f8; csrr a0, fflags", OF | NX),
            ("fmv.x.d a0, f9", 0x7ff0_0000_0000_0000),
            // Flags accumulate until cleared.
            ("csrw fflags, zero; fdiv.d f3, f1, f2; fdiv.d f6, f1, f0; csrr a0, fflags", NX | DZ),
            ("fdiv.s f10, f1, f1; csrr a0, fflags", NX | DZ), // NaN-boxing fails: NaN/NaN is quiet
            // fflags / frm / fcsr views.
            ("li t0, 0xff; csrw fcsr, t0; csrr a0, fcsr", 0xff),
            ("csrr a0, frm", 7),
            ("csrr a0, fflags", 0x1f),
            ("li t0, 0xfff; csrw fcsr, t0; csrr a0, fcsr", 0xff),
            ("li t0, 2; csrrw a0, frm, t0", 7),
            ("csrr a0, fcsr", 0x5f),
            ("csrrci a0, fflags, 0x3; csrr a0, fcsr", 0x5c),
            ("csrrsi a0, fflags, 0x1; csrr a0, fflags", 0x1d),
            ("csrwi fcsr, 0; csrr a0, fcsr", 0),
        ],
    );
}

#[test]
fn rounding_modes_static_and_dynamic() {
    let x = 2.5f64.to_bits();
    let y = (-2.5f64).to_bits();
    let pre = format!(
        "li t0, {x:#x}; fmv.d.x f1, t0; li t0, {y:#x}; fmv.d.x f2, t0; \
         li t0, 0x3f800000; fmv.w.x f3, t0; li t0, 0x40400000; fmv.w.x f4, t0"
    );
    check_cases(
        &pre,
        &[
            ("csrwi frm, 0; fcvt.l.d a0, f1", 2),
            ("csrwi frm, 1; fcvt.l.d a0, f1", 2),
            ("csrwi frm, 2; fcvt.l.d a0, f1", 2),
            ("csrwi frm, 3; fcvt.l.d a0, f1", 3),
            ("csrwi frm, 4; fcvt.l.d a0, f1", 3),
            ("csrwi frm, 0; fcvt.l.d a0, f2", -2i64 as u64),
            ("csrwi frm, 1; fcvt.l.d a0, f2", -2i64 as u64),
            ("csrwi frm, 2; fcvt.l.d a0, f2", -3i64 as u64),
            ("csrwi frm, 3; fcvt.l.d a0, f2", -2i64 as u64),
            ("csrwi frm, 4; fcvt.l.d a0, f2", -3i64 as u64),
            // A static rounding mode overrides frm.
            ("csrwi frm, 3; fcvt.l.d a0, f1, rtz", 2),
            ("csrwi frm, 1; fcvt.l.d a0, f1, rmm", 3),
            ("csrwi frm, 0; fcvt.l.d a0, f2, rdn", -3i64 as u64),
            // 1/3 in single precision: the rounding direction shows in the last bit.
            (
                "csrwi frm, 0; fdiv.s f5, f3, f4; fmv.x.w a0, f5",
                0x3eaa_aaab,
            ),
            (
                "csrwi frm, 1; fdiv.s f5, f3, f4; fmv.x.w a0, f5",
                0x3eaa_aaaa,
            ),
            (
                "csrwi frm, 2; fdiv.s f5, f3, f4; fmv.x.w a0, f5",
                0x3eaa_aaaa,
            ),
            (
                "csrwi frm, 3; fdiv.s f5, f3, f4; fmv.x.w a0, f5",
                0x3eaa_aaab,
            ),
            (
                "csrwi frm, 2; fdiv.s f5, f3, f4, rne; fmv.x.w a0, f5",
                0x3eaa_aaab,
            ),
            (
                "csrwi frm, 0; fneg.s f6, f3; fdiv.s f5, f6, f4, rup; fmv.x.w a0, f5",
                0xffff_ffff_beaa_aaaa,
            ),
            (
                "csrwi frm, 0; fneg.s f6, f3; fdiv.s f5, f6, f4, rdn; fmv.x.w a0, f5",
                0xffff_ffff_beaa_aaab,
            ),
            // double 0.1 -> single, round to nearest
            (
                "li t0, 0x3fb999999999999a; fmv.d.x f7, t0; fcvt.s.d f8, f7; fmv.x.w a0, f8",
                0x3dcc_cccd,
            ),
            (
                "li t0, 0x3fb999999999999a; fmv.d.x f7, t0; fcvt.s.d f8, f7, rtz; fmv.x.w a0, f8",
                0x3dcc_cccc,
            ),
        ],
    );
}

#[test]
fn reserved_dynamic_rounding_mode_is_illegal() {
    let mut vm = TestVm::with_program(
        "
        .option norvc
        csrwi frm, 5
        fadd.d f1, f2, f3
        ecall
        ",
    );
    let e = vm.run();
    let word = vm.read_u32(RAM_GPA + 4) as u64;
    assert_eq!(
        e,
        Exit::Trap {
            cause: cause::ILLEGAL_INST,
            tval: word,
            htval: 0,
            htinst: 0
        }
    );
    assert_eq!(vm.csr(UEPC), RAM_GPA + 4);
}

#[test]
fn conversions_saturate() {
    let big = 1e30f64.to_bits();
    let nbig = (-1e30f64).to_bits();
    check_cases(
        &format!(
            "li t0, 0x7f800000; fmv.w.x f1, t0; li t0, 0xff800000; fmv.w.x f2, t0; \
             li t0, 0x7fc00000; fmv.w.x f3, t0; li t0, 0xbf800000; fmv.w.x f4, t0; \
             li t0, {big:#x}; fmv.d.x f5, t0; li t0, {nbig:#x}; fmv.d.x f6, t0; \
             li t0, 0x7ff8000000000000; fmv.d.x f7, t0; li t0, -5; fcvt.d.l f8, t0"
        ),
        &[
            ("fcvt.w.s a0, f1", 0x7fff_ffff),
            ("fcvt.w.s a0, f2", 0xffff_ffff_8000_0000),
            ("fcvt.w.s a0, f3", 0x7fff_ffff),
            ("csrw fflags, zero; fcvt.wu.s a0, f4; csrr a1, fflags; slli a1, a1, 32; or a0, a0, a1", NV << 32),
            ("fcvt.wu.s a0, f1", u64::MAX),
            ("fcvt.wu.s a0, f3", u64::MAX),
            ("fcvt.l.s a0, f1", i64::MAX as u64),
            ("fcvt.l.s a0, f2", i64::MIN as u64),
            ("fcvt.lu.s a0, f3", u64::MAX),
            ("fcvt.l.d a0, f5", i64::MAX as u64),
            ("fcvt.l.d a0, f6", i64::MIN as u64),
            ("fcvt.l.d a0, f7", i64::MAX as u64),
            ("fcvt.lu.d a0, f8", 0),
            ("fcvt.lu.d a0, f7", u64::MAX),
            ("fcvt.w.d a0, f5", 0x7fff_ffff),
            ("fcvt.w.d a0, f6", 0xffff_ffff_8000_0000),
            ("li t0, 3000000000; fcvt.d.l f9, t0; fcvt.w.d a0, f9", 0x7fff_ffff),
            ("li t0, 3000000000; fcvt.d.l f9, t0; fcvt.wu.d a0, f9", 0xffff_ffff_b2d0_5e00),
            ("fcvt.w.d a0, f8", -5i64 as u64),
            ("csrw fflags, zero; fcvt.w.d a0, f5; csrr a0, fflags", NV),
            // In range after rounding: only inexact.
            ("li t0, 0xbfe0000000000000; fmv.d.x f10, t0; csrw fflags, zero; fcvt.wu.d a0, f10, rtz; csrr a1, fflags; slli a1, a1, 32; or a0, a0, a1", NX << 32),
        ],
    );
}

#[test]
fn fused_multiply_add_min_max_compare_classify_sign() {
    check_cases(
        "li t0, 2; fcvt.s.l f1, t0; li t0, 3; fcvt.s.l f2, t0; li t0, 1; fcvt.s.l f3, t0; \
         li t0, 0x7fc00000; fmv.w.x f4, t0; li t0, 0x7f800001; fmv.w.x f5, t0; \
         fcvt.d.s f11, f1; fcvt.d.s f12, f2; fcvt.d.s f13, f3",
        &[
            ("fmadd.s f6, f1, f2, f3; fcvt.l.s a0, f6", 7),
            ("fmsub.s f6, f1, f2, f3; fcvt.l.s a0, f6", 5),
            ("fnmsub.s f6, f1, f2, f3; fcvt.l.s a0, f6", -5i64 as u64),
            ("fnmadd.s f6, f1, f2, f3; fcvt.l.s a0, f6", -7i64 as u64),
            ("fmadd.d f6, f11, f12, f13; fmv.x.d a0, f6", 7.0f64.to_bits()),
            ("fnmadd.d f6, f11, f12, f13; fmv.x.d a0, f6", (-7.0f64).to_bits()),
            // fmin/fmax: a quiet NaN operand is ignored; a signaling one raises NV.
            ("csrw fflags, zero; fmin.s f6, f4, f1; fmv.x.w a0, f6", 0x4000_0000),
            ("csrr a0, fflags", 0),
            ("csrw fflags, zero; fmax.s f6, f5, f2; fmv.x.w a0, f6", 0x4040_0000),
            ("csrr a0, fflags", NV),
            ("fmin.s f6, f4, f4; fmv.x.w a0, f6", 0x7fc0_0000),
            ("fmv.w.x f7, zero; fneg.s f8, f7; fmin.s f6, f7, f8; fmv.x.w a0, f6", 0xffff_ffff_8000_0000),
            ("fmv.w.x f7, zero; fneg.s f8, f7; fmax.s f6, f8, f7; fmv.x.w a0, f6", 0),
            // Comparisons: feq is quiet, flt/fle signal on any NaN.
            ("csrw fflags, zero; feq.s a0, f4, f1; csrr a1, fflags; slli a1, a1, 8; or a0, a0, a1", 0),
            ("csrw fflags, zero; flt.s a0, f4, f1; csrr a1, fflags; slli a1, a1, 8; or a0, a0, a1", NV << 8),
            ("csrw fflags, zero; feq.s a0, f5, f1; csrr a1, fflags; slli a1, a1, 8; or a0, a0, a1", NV << 8),
            ("flt.s a0, f1, f2", 1),
            ("fle.s a0, f2, f2", 1),
            ("flt.d a0, f12, f11", 0),
            ("feq.d a0, f13, f13", 1),
            // fclass
            ("fneg.s f6, f4; fclass.s a0, f5", 0x100),
            ("fclass.s a0, f4", 0x200),
            ("li t0, 0xff800000; fmv.w.x f6, t0; fclass.s a0, f6", 0x001),
            ("fmv.w.x f6, zero; fclass.s a0, f6", 0x010),
            ("fclass.s a0, f1", 0x040),
            ("li t0, 1; fmv.w.x f6, t0; fclass.s a0, f6", 0x020),
            ("fclass.d a0, f13", 0x040),
            ("fneg.d f6, f13; fclass.d a0, f6", 0x002),
            // sign injection
            ("fneg.s f6, f1; fabs.s f7, f6; fmv.x.w a0, f7", 0x4000_0000),
            ("fneg.s f6, f1; fsgnjx.s f7, f6, f6; fmv.x.w a0, f7", 0x4000_0000),
            ("fneg.s f6, f2; fsgnjx.s f7, f1, f6; fmv.x.w a0, f7", 0xffff_ffff_c000_0000),
            ("fneg.d f6, f12; fsgnj.d f7, f11, f6; fmv.x.d a0, f7", (-2.0f64).to_bits()),
            ("fsgnjn.d f7, f12, f12; fmv.x.d a0, f7", (-3.0f64).to_bits()),
            ("li t0, 0x400921fb54442d18; fmv.d.x f6, t0; fsqrt.d f7, f6; fmul.d f8, f7, f7; fmv.x.d a0, f8", 0x4009_21fb_5444_2d17),
        ],
    );
}

fn fs_of(vm: &mut TestVm) -> u64 {
    (vm.csr(HUVSSTATUS) & SSTATUS_FS) >> SSTATUS_FS_SHIFT
}

#[test]
fn fs_off_makes_fp_illegal() {
    for insn in [
        "fadd.d f1, f2, f3",
        "fmv.x.d a0, f1",
        "fmv.d.x f1, a0",
        "flw f1, 0(sp)",
        "fsd f1, 0(sp)",
        "csrr a0, fflags",
        "csrw frm, zero",
        "csrr a0, fcsr",
        "fcvt.s.w f1, a0",
    ] {
        let mut vm = TestVm::with_program(&format!(
            "
            .option norvc
            li sp, 0x80100000
            li a0, 0x99
            {insn}
            ecall
            "
        ));
        vm.set_csr(HUVSSTATUS, 0);
        vm.hart.set_fpr(1, 0x1234);
        let e = vm.run();
        let pc = vm.csr(UEPC);
        let word = vm.read_u32(pc) as u64;
        assert_eq!(
            e,
            Exit::Trap {
                cause: cause::ILLEGAL_INST,
                tval: word,
                htval: 0,
                htinst: 0
            },
            "{insn}"
        );
        assert_eq!(vm.x(r::A0), 0x99, "{insn}");
        assert_eq!(vm.f(1), 0x1234, "{insn}");
        assert_eq!(vm.read_u64(0x8010_0000), 0, "{insn}");
        assert_eq!(fs_of(&mut vm), 0, "{insn}: FS stays Off");
        // With FS enabled the same instruction runs.
        vm.set_csr(HUVSSTATUS, 1 << SSTATUS_FS_SHIFT);
        vm.run_to_ecall();
    }
}

#[test]
fn fs_becomes_dirty_after_fp_writes() {
    let mut vm = TestVm::with_program(
        "
        csrr s0, sstatus
        li t0, 0x3ff0000000000000
        fmv.d.x f1, t0
        csrr s1, sstatus
        ecall
        csrr s2, sstatus
        csrwi fflags, 1
        csrr s3, sstatus
        ecall
        ",
    );
    vm.run_to_ecall();
    assert_eq!((vm.x(r::S0) & SSTATUS_FS) >> SSTATUS_FS_SHIFT, 1, "Initial");
    assert_eq!(vm.x(r::S0) & SSTATUS_SD, 0);
    assert_eq!((vm.x(r::S1) & SSTATUS_FS) >> SSTATUS_FS_SHIFT, 3, "Dirty");
    assert_ne!(vm.x(r::S1) & SSTATUS_SD, 0, "SD summarises FS=Dirty");
    assert_eq!(fs_of(&mut vm), 3);
    assert_ne!(vm.csr(HUVSSTATUS) & SSTATUS_SD, 0);
    // The hypervisor saves FP state and sets FS=Clean; an fflags write dirties it again.
    vm.set_csr(HUVSSTATUS, 2 << SSTATUS_FS_SHIFT);
    vm.skip();
    vm.run_to_ecall();
    assert_eq!((vm.x(r::S2) & SSTATUS_FS) >> SSTATUS_FS_SHIFT, 2, "Clean");
    assert_eq!(vm.x(r::S2) & SSTATUS_SD, 0);
    assert_eq!((vm.x(r::S3) & SSTATUS_FS) >> SSTATUS_FS_SHIFT, 3);
    assert_eq!(vm.f(1), 0x3ff0_0000_0000_0000);
}

#[test]
fn guest_can_turn_fp_off_itself() {
    let mut vm = TestVm::with_program(
        "
        li t0, 0x6000
        csrc sstatus, t0
        csrr s0, sstatus
        fmv.d.x f1, zero
        ecall
        ",
    );
    let (c, _, _, _) = TestVm::trap(vm.run());
    assert_eq!(c, cause::ILLEGAL_INST);
    assert_eq!(vm.x(r::S0) & SSTATUS_FS, 0);
}

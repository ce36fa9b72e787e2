//! Two-stage translation from guest code: VS-stage Sv39/Sv48 tables (superpages at every
//! level, U/SUM/MXR, hardware A/D), page faults delegated or exiting, guest-page faults with
//! hutval/hutinst, G-stage permissions, and the fences that make table changes visible.

mod common;

use common::*;
use dvext::csr::*;

/// A program-loaded VM with `pt` in vsatp.
fn vm_with_pt(src: &str, build: impl FnOnce(&TestVm) -> VsPt) -> (TestVm, VsPt) {
    let mut vm = TestVm::with_program(src);
    let pt = build(&vm);
    vm.set_csr(HUVSATP, pt.satp());
    assert_eq!(vm.csr(HUVSATP), pt.satp());
    (vm, pt)
}

fn pte_flags(vm: &TestVm, pte_gpa: u64) -> u64 {
    vm.read_u64(pte_gpa) & 0xff
}

#[test]
fn sv39_superpages_at_every_level_and_hardware_ad() {
    let leaves = std::cell::RefCell::new(Vec::new());
    let (mut vm, _pt) = vm_with_pt(
        "
        li t0, 0x100500008
        ld s0, 0(t0)              # 1 GiB leaf
        li t0, 0x20012340
        ld s1, 0(t0)              # 2 MiB leaf
        li t0, 0x30001ff8
        ld s2, 0(t0)              # 4 KiB leaf
        li t0, 0xffffffffc0000010
        ld s3, 0(t0)              # top of the address space
        li t1, 0x5151
        li t0, 0x20012348
        sd t1, 0(t0)
        li t0, 0xffffffffc0000018
        sd t1, 0(t0)
        ecall
        ",
        |vm| {
            let mut pt = VsPt::with_identity(3, vm);
            let f = PTE_V | PTE_R | PTE_W;
            let mut l = leaves.borrow_mut();
            l.push(pt.map(vm, 0x1_0000_0000, 0x8000_0000, 2, f));
            l.push(pt.map(vm, 0x2000_0000, 0x8060_0000, 1, f));
            l.push(pt.map(vm, 0x3000_1000, 0x8070_5000, 0, f));
            l.push(pt.map(vm, 0xffff_ffff_c000_0000, 0x8070_6000, 0, f));
            pt
        },
    );
    vm.write_u64(0x8050_0008, 0x1111_1111_1111_1111);
    vm.write_u64(0x8061_2340, 0x2222_2222_2222_2222);
    vm.write_u64(0x8070_5ff8, 0x3333_3333_3333_3333);
    vm.write_u64(0x8070_6010, 0x4444_4444_4444_4444);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), 0x1111_1111_1111_1111);
    assert_eq!(vm.x(r::S1), 0x2222_2222_2222_2222);
    assert_eq!(vm.x(r::S2), 0x3333_3333_3333_3333);
    assert_eq!(vm.x(r::S3), 0x4444_4444_4444_4444);
    assert_eq!(vm.read_u64(0x8061_2348), 0x5151);
    assert_eq!(vm.read_u64(0x8070_6018), 0x5151);
    // A set on every leaf used, D only where stored through.
    let l = leaves.borrow();
    let ad = |i: usize| pte_flags(&vm, l[i]) & (PTE_A | PTE_D);
    assert_eq!(ad(0), PTE_A);
    assert_eq!(ad(1), PTE_A | PTE_D);
    assert_eq!(ad(2), PTE_A);
    assert_eq!(ad(3), PTE_A | PTE_D);
}

#[test]
fn sv48_superpages_at_every_level() {
    let (mut vm, _pt) = vm_with_pt(
        "
        li t0, 0x8080500008
        ld s0, 0(t0)              # 512 GiB leaf
        li t0, 0x100500010
        ld s1, 0(t0)              # 1 GiB
        li t0, 0x20012340
        ld s2, 0(t0)              # 2 MiB
        li t0, 0x30001ff8
        ld s3, 0(t0)              # 4 KiB
        li t0, 0xffff800000000010
        ld s4, 0(t0)              # top half
        li t1, 0x4848
        li t0, 0x8080500020
        sd t1, 0(t0)
        ecall
        ",
        |vm| {
            let mut pt = VsPt::with_identity(4, vm);
            pt.map(vm, 0x80_0000_0000, 0, 3, VS_RWX);
            pt.map(vm, 0x1_0000_0000, 0x8000_0000, 2, VS_RWX);
            pt.map(vm, 0x2000_0000, 0x8060_0000, 1, VS_RWX);
            pt.map(vm, 0x3000_1000, 0x8070_5000, 0, VS_RWX);
            pt.map(vm, 0xffff_8000_0000_0000, 0x8070_6000, 0, VS_RWX);
            pt
        },
    );
    vm.write_u64(0x8050_0008, 0x1);
    vm.write_u64(0x8050_0010, 0x2);
    vm.write_u64(0x8061_2340, 0x3);
    vm.write_u64(0x8070_5ff8, 0x4);
    vm.write_u64(0x8070_6010, 0x5);
    vm.run_to_ecall();
    assert_eq!(
        [
            vm.x(r::S0),
            vm.x(r::S1),
            vm.x(r::S2),
            vm.x(r::S3),
            vm.x(r::S4)
        ],
        [1, 2, 3, 4, 5]
    );
    assert_eq!(vm.read_u64(0x8050_0020), 0x4848);
}

/// Run `insn` (after `li t0, addr`) and expect an exit with `cause` and utval = `addr`.
fn expect_fault(vm: &mut TestVm, want_cause: u64, addr: u64) {
    let e = vm.run();
    let (c, tval, htval, htinst) = TestVm::trap(e);
    assert_eq!((c, tval), (want_cause, addr), "exit {e:?}");
    assert_eq!((htval, htinst), (0, 0));
    assert_ne!(
        vm.csr(HUSTATUS) & HSTATUS_GVA,
        0,
        "utval holds a guest virtual address"
    );
}

#[test]
fn non_canonical_and_misaligned_superpage_fault() {
    for (levels, va) in [(3u32, 0x80_0000_0000u64), (4, 0x8000_0000_0000)] {
        let (mut vm, _) = vm_with_pt(&format!("li t0, {va:#x}\nld a0, 0(t0)\necall\n"), |vm| {
            VsPt::with_identity(levels, vm)
        });
        expect_fault(&mut vm, cause::LOAD_PAGE_FAULT, va);
    }
    // A 2 MiB leaf whose PPN is not 2 MiB aligned.
    let (mut vm, _) = vm_with_pt("li t0, 0x20000000\nsd a0, 0(t0)\necall\n", |vm| {
        let mut pt = VsPt::with_identity(3, vm);
        pt.map(vm, 0x2000_0000, 0x8060_1000, 1, VS_RWX);
        pt
    });
    expect_fault(&mut vm, cause::STORE_PAGE_FAULT, 0x2000_0000);
}

const USER_PAGE: u64 = 0x4000_0000;
const XONLY_PAGE: u64 = 0x4000_1000;
/// VU code alias: VA 0xc000_0000 maps RAM with U set.
const USER_CODE: u64 = 0xc000_0000;

fn permissions_pt(vm: &TestVm) -> VsPt {
    let mut pt = VsPt::with_identity(3, vm);
    pt.map(
        vm,
        USER_PAGE,
        0x8070_7000,
        0,
        PTE_V | PTE_R | PTE_W | PTE_U | PTE_A | PTE_D,
    );
    pt.map(vm, XONLY_PAGE, 0x8070_8000, 0, PTE_V | PTE_X | PTE_A);
    pt.map(vm, USER_CODE, RAM_GPA, 2, VS_RWX | PTE_U);
    vm.write_u64(0x8070_7000, 0xaaaa);
    vm.write_u64(0x8070_8000, 0xbbbb);
    pt
}

#[test]
fn sum_controls_supervisor_access_to_user_pages() {
    let src = format!(".option norvc\nli t0, {USER_PAGE:#x}\nld a0, 0(t0)\necall\n");
    let (mut vm, _) = vm_with_pt(&src, permissions_pt);
    expect_fault(&mut vm, cause::LOAD_PAGE_FAULT, USER_PAGE);
    let pc = vm.csr(UEPC);
    // The hypervisor sets SUM on the guest's behalf and retries the load.
    let s = vm.csr(HUVSSTATUS);
    vm.set_csr(HUVSSTATUS, s | SSTATUS_SUM);
    assert_eq!(vm.csr(UEPC), pc);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 0xaaaa);
}

#[test]
fn mxr_makes_execute_only_pages_readable() {
    let src = format!(".option norvc\nli t0, {XONLY_PAGE:#x}\nld a0, 0(t0)\necall\n");
    let (mut vm, _) = vm_with_pt(&src, permissions_pt);
    expect_fault(&mut vm, cause::LOAD_PAGE_FAULT, XONLY_PAGE);
    let s = vm.csr(HUVSSTATUS);
    vm.set_csr(HUVSSTATUS, s | SSTATUS_MXR);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 0xbbbb);
    // And without MXR again it faults again (the read permission was not cached).
    vm.set_csr(HUVSSTATUS, s);
    vm.set_csr(UEPC, RAM_GPA);
    expect_fault(&mut vm, cause::LOAD_PAGE_FAULT, XONLY_PAGE);
}

#[test]
fn vu_needs_u_pages_and_vs_cannot_execute_them() {
    // VU runs from the U alias of the code; loads from a U page work, from a non-U page fault.
    let src = format!(
        "
        .option norvc
        li t0, {USER_PAGE:#x}
        ld a0, 0(t0)
        li t0, {DATA:#x}
        ld a1, 0(t0)
        ecall
        "
    );
    let (mut vm, _) = vm_with_pt(&src, permissions_pt);
    let hs = vm.csr(HUSTATUS);
    vm.set_csr(HUSTATUS, hs & !HSTATUS_SPVP);
    vm.set_csr(UEPC, USER_CODE);
    expect_fault(&mut vm, cause::LOAD_PAGE_FAULT, DATA);
    assert_eq!(vm.x(r::A0), 0xaaaa);
    let pc = vm.csr(UEPC);
    assert_eq!(pc >> 30, USER_CODE >> 30, "uepc in the U alias");
    assert_eq!(
        vm.read_u32(pc - USER_CODE + RAM_GPA) & 0x7f,
        0x03,
        "uepc at the load"
    );

    // VS-mode may never execute from a U page, even with SUM.
    let (mut vm, _) = vm_with_pt(&src, permissions_pt);
    let s = vm.csr(HUVSSTATUS);
    vm.set_csr(HUVSSTATUS, s | SSTATUS_SUM);
    vm.set_csr(UEPC, USER_CODE);
    expect_fault(&mut vm, cause::INST_PAGE_FAULT, USER_CODE);
}

#[test]
fn load_page_fault_delegated_to_the_guest() {
    let (mut vm, _) = vm_with_pt(
        "
        la t0, handler
        csrw stvec, t0
        li t0, 0x50000008
        ld a0, 0(t0)
        li s5, 1               # skipped
    back:
        ecall
    handler:
        csrr s0, scause
        csrr s1, stval
        csrr s2, sepc
        la t0, back
        csrw sepc, t0
        sret
        ",
        |vm| VsPt::with_identity(3, vm),
    );
    vm.set_csr(
        HUEDELEG,
        (1 << cause::LOAD_PAGE_FAULT) | (1 << cause::STORE_PAGE_FAULT),
    );
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), cause::LOAD_PAGE_FAULT);
    assert_eq!(vm.x(r::S1), 0x5000_0008);
    assert_eq!(
        vm.read_u32(vm.x(r::S2)) & 0x7f,
        0x03,
        "sepc points at the load"
    );
    assert_eq!(vm.x(r::S5), 0);
    assert_eq!(vm.csr(HUVSTVAL), 0x5000_0008);
}

#[test]
fn guest_builds_its_own_tables_and_uses_sfence() {
    // The guest writes an Sv39 table (identity 1 GiB + one 4 KiB page), turns paging on,
    // then remaps the page and uses sfence.vma to see the change.
    let root = VS_TABLES;
    let l1 = VS_TABLES + 0x1000;
    let l0 = VS_TABLES + 0x2000;
    let mut vm = TestVm::with_program(&format!(
        "
        li t0, {root:#x}
        li t1, {ident:#x}
        sd t1, 16(t0)            # VPN2 = 2: 0x8000_0000 1 GiB identity
        li t1, {l1pte:#x}
        sd t1, 8(t0)             # VPN2 = 1: 0x4000_0000 -> l1
        li t0, {l1:#x}
        li t1, {l0pte:#x}
        sd t1, 0(t0)
        li t0, {l0:#x}
        li t1, {pg1:#x}
        sd t1, 0(t0)             # 0x4000_0000 -> 0x8070_9000
        li t1, {satp:#x}
        csrw satp, t1
        sfence.vma
        li t2, 0x40000000
        ld s0, 0(t2)
        li t1, {pg2:#x}
        sd t1, 0(t0)             # remap to 0x8070_a000
        sfence.vma t2
        ld s1, 0(t2)
        csrr s2, satp
        ecall
        ",
        ident = ((RAM_GPA >> 12) << 10) | VS_RWX,
        l1pte = ((l1 >> 12) << 10) | PTE_V,
        l0pte = ((l0 >> 12) << 10) | PTE_V,
        pg1 = ((0x8070_9000u64 >> 12) << 10) | VS_RWX,
        pg2 = ((0x8070_a000u64 >> 12) << 10) | VS_RWX,
        satp = (SV39 << 60) | (root >> 12),
    ));
    vm.write_u64(0x8070_9000, 0x9999);
    vm.write_u64(0x8070_a000, 0xaaaa);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), 0x9999);
    assert_eq!(vm.x(r::S1), 0xaaaa);
    assert_eq!(vm.x(r::S2), (SV39 << 60) | (root >> 12));
    assert_eq!(vm.csr(HUVSATP), vm.x(r::S2));
}

#[test]
fn unsupported_satp_mode_is_ignored() {
    let mut vm = TestVm::with_program(
        "
        li t0, 0x7000000000080400    # mode 7: reserved
        csrw satp, t0
        csrr s0, satp
        ecall
        ",
    );
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), 0);
}

// ----------------------------------------------------------------------- guest-page faults

/// Unmapped guest-physical memory (no G-stage mapping).
const HOLE: u64 = 0x1000_0000;

fn gpf(src: &str) -> (TestVm, u64, u64, u64, u64) {
    let mut vm = TestVm::with_program(src);
    let (c, tval, htval, htinst) = TestVm::trap(vm.run());
    (vm, c, tval, htval, htinst)
}

#[test]
fn guest_page_fault_reports_gpa_and_transformed_instruction() {
    // (instruction with a1 = HOLE, cause, offset, htinst)
    let cases: &[(&str, u64, u64, u64)] = &[
        ("lw a5, 8(a1)", 21, 8, (15 << 7) | (2 << 12) | 0x03),
        ("c.lw a5, 8(a1)", 21, 8, (15 << 7) | (2 << 12) | 0x01),
        ("lbu t0, -1(a1)", 21, u64::MAX, (5 << 7) | (4 << 12) | 0x03),
        ("ld s0, 0x7f8(a1)", 21, 0x7f8, (8 << 7) | (3 << 12) | 0x03),
        ("c.ld s1, 0(a1)", 21, 0, (9 << 7) | (3 << 12) | 0x01),
        ("lh zero, 2(a1)", 21, 2, (1 << 12) | 0x03),
        ("fld fa0, 16(a1)", 21, 16, (10 << 7) | (3 << 12) | 0x07),
        ("c.fld fa1, 16(a1)", 21, 16, (11 << 7) | (3 << 12) | 0x05),
        ("flw ft3, 4(a1)", 21, 4, (3 << 7) | (2 << 12) | 0x07),
        ("sd a4, 16(a1)", 23, 16, (14 << 20) | (3 << 12) | 0x23),
        ("c.sd a4, 16(a1)", 23, 16, (14 << 20) | (3 << 12) | 0x21),
        ("sb t6, -2(a1)", 23, u64::MAX - 1, (31 << 20) | 0x23),
        ("sh a2, 6(a1)", 23, 6, (12 << 20) | (1 << 12) | 0x23),
        ("c.sw a2, 4(a1)", 23, 4, (12 << 20) | (2 << 12) | 0x21),
        ("fsd fs1, 8(a1)", 23, 8, (9 << 20) | (3 << 12) | 0x27),
        ("fsw fa2, 8(a1)", 23, 8, (12 << 20) | (2 << 12) | 0x27),
        // AMOs keep everything but rs1.
        ("amoadd.w a0, a2, (a1)", 23, 0, 0x00c5_a52f & !(0x1f << 15)),
        ("lr.d.aq a3, (a1)", 21, 0, 0x1405_b6af & !(0x1f << 15)),
    ];
    for (insn, want_cause, off, want_htinst) in cases {
        let rvc = if insn.starts_with("c.") {
            ""
        } else {
            ".option norvc"
        };
        let (mut vm, c, tval, htval, htinst) = gpf(&format!(
            "
            {rvc}
            li a1, {HOLE:#x}
            li s10, 0x77
            {insn}
            ecall
            "
        ));
        let addr = HOLE.wrapping_add(*off);
        assert_eq!(c, *want_cause, "{insn}");
        assert_eq!(tval, addr, "{insn}: utval");
        assert_eq!(htval, addr >> 2, "{insn}: hutval");
        assert_eq!(htinst, *want_htinst, "{insn}: hutinst {htinst:#x}");
        assert_eq!(vm.csr(HUTVAL), addr >> 2);
        assert_eq!(vm.csr(HUTINST), *want_htinst);
        assert_ne!(vm.csr(HUSTATUS) & HSTATUS_GVA, 0, "{insn}");
        let pc = vm.csr(UEPC);
        let parcel = vm.read_u32(pc);
        let compressed = insn.starts_with("c.");
        assert_eq!(parcel & 3 != 3, compressed, "{insn}: uepc points at it");
    }
    // Sanity check of the AMO encodings used above.
    let bin = assemble("amoadd.w a0, a2, (a1)\nlr.d.aq a3, (a1)\n");
    assert_eq!(&bin[..8], &[0x2f, 0xa5, 0xc5, 0x00, 0xaf, 0xb6, 0x05, 0x14]);
}

#[test]
fn guest_page_fault_behind_vs_translation_and_on_pte_reads() {
    // VA 0x5000_0000 -> GPA HOLE: the fault names the VA in utval and the GPA in hutval.
    let (mut vm, _) = vm_with_pt(
        ".option norvc\nli t0, 0x50000010\nsw a0, 0(t0)\necall\n",
        |vm| {
            let mut pt = VsPt::with_identity(3, vm);
            pt.map(vm, 0x5000_0000, HOLE, 0, VS_RWX);
            pt
        },
    );
    let (c, tval, htval, htinst) = TestVm::trap(vm.run());
    assert_eq!(c, cause::STORE_GUEST_PAGE_FAULT);
    assert_eq!(tval, 0x5000_0010);
    assert_eq!(htval, (HOLE + 0x10) >> 2);
    assert_eq!(htinst, (10 << 20) | (2 << 12) | 0x23);

    // A VS-stage table that lives in unmapped guest-physical memory: the implicit PTE read
    // faults, and hutinst is the pseudoinstruction 0x3000.
    let (mut vm, _) = vm_with_pt(
        ".option norvc\nli t0, 0x60000000\nld a0, 0(t0)\necall\n",
        |vm| {
            let pt = VsPt::with_identity(3, vm);
            // VPN2 of 0x6000_0000 is 1: point it at a table in the hole.
            vm.write_u64(pt.root + 8, ((HOLE >> 12) << 10) | PTE_V);
            pt
        },
    );
    let (c, tval, htval, htinst) = TestVm::trap(vm.run());
    assert_eq!(c, cause::LOAD_GUEST_PAGE_FAULT);
    assert_eq!(tval, 0x6000_0000);
    // VPN1 of 0x6000_0000 is 256: the PTE at HOLE + 256 * 8.
    assert_eq!(htval, (HOLE + 256 * 8) >> 2);
    assert_eq!(htinst, 0x3000);
}

#[test]
fn store_to_read_only_gstage_page_exits_with_cause_23() {
    let mut vm = TestVm::new();
    let ro_hpa = TestVm::hpa(0x8080_0000);
    vm.g_map(
        0xc000_0000,
        ro_hpa,
        0,
        PTE_V | PTE_R | PTE_U | PTE_A | PTE_D,
    );
    vm.write_u64(0x8080_0000, 0x0123_4567_89ab_cdef);
    vm.load_program(
        "
        .option norvc
        li t0, 0xc0000000
        ld s0, 0(t0)
        li t1, 5
        sd t1, 8(t0)
        ecall
        ",
    );
    let (c, tval, htval, htinst) = TestVm::trap(vm.run());
    assert_eq!(vm.x(r::S0), 0x0123_4567_89ab_cdef);
    assert_eq!(c, cause::STORE_GUEST_PAGE_FAULT);
    assert_eq!(tval, 0xc000_0008);
    assert_eq!(htval, 0xc000_0008 >> 2);
    assert_eq!(htinst, (6 << 20) | (3 << 12) | 0x23);
    assert_eq!(vm.read_u64(0x8080_0008), 0);

    // An AMO on the same page faults the same way, without modifying memory.
    vm.load_program(".option norvc\nli t0, 0xc0000000\namoor.d a0, t0, (t0)\necall\n");
    let (c, _, htval, _) = TestVm::trap(vm.run());
    assert_eq!(c, cause::STORE_GUEST_PAGE_FAULT);
    assert_eq!(htval, 0xc000_0000 >> 2);
    assert_eq!(vm.read_u64(0x8080_0000), 0x0123_4567_89ab_cdef);
}

#[test]
fn instruction_guest_page_faults() {
    // Jump into unmapped guest-physical memory.
    let (vm0, c, tval, htval, htinst) = gpf(&format!("li t0, {HOLE:#x}\njr t0\n"));
    let mut vm = vm0;
    assert_eq!(c, cause::INST_GUEST_PAGE_FAULT);
    assert_eq!(tval, HOLE);
    assert_eq!(htval, HOLE >> 2);
    assert_eq!(htinst, 0);
    assert_eq!(vm.csr(UEPC), HOLE);

    // A G-stage page without X.
    let mut vm2 = TestVm::new();
    vm2.g_map(0xc000_1000, TestVm::hpa(0x8080_1000), 0, G_RWX & !PTE_X);
    vm2.load_program("li t0, 0xc0001000\njr t0\n");
    let (c, tval, htval, _) = TestVm::trap(vm2.run());
    assert_eq!(
        (c, tval, htval),
        (cause::INST_GUEST_PAGE_FAULT, 0xc000_1000, 0xc000_1000 >> 2)
    );

    // A 32-bit instruction at the very end of RAM: its second half is unmapped.
    let end = RAM_GPA + RAM_SIZE;
    vm.write(end - 2, &0x0513u16.to_le_bytes()); // low half of `addi a0, zero, ...`
    vm.set_csr(UEPC, end - 2);
    let (c, tval, htval, _) = TestVm::trap(vm.run());
    assert_eq!(c, cause::INST_GUEST_PAGE_FAULT);
    assert_eq!(tval, end, "utval names the unmapped half");
    assert_eq!(htval, end >> 2);
    assert_eq!(vm.csr(UEPC), end - 2, "uepc is the instruction's start");
}

#[test]
fn hufence_gvma_makes_gstage_changes_visible() {
    let mut vm = TestVm::new();
    let (a, b) = (0x8080_2000u64, 0x8080_3000u64);
    let pte = vm.g_map(0xc000_2000, TestVm::hpa(a), 0, G_RWX);
    vm.write_u64(a, 0xa);
    vm.write_u64(b, 0xb);
    vm.load_program(
        "
        li t0, 0xc0002000
    1:  ld a0, 0(t0)
        ecall
        j 1b
        ",
    );
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 0xa);
    // Remap the page to b.
    vm.hv
        .phys_mem()
        .store_u64(pte, ((TestVm::hpa(b) >> 12) << 10) | G_RWX);
    vm.hart.hufence_gvma(Some(VMID), Some(0xc000_2000));
    vm.skip();
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 0xb);
    // Unmap it: the next access is a guest-page fault.
    vm.hv.phys_mem().store_u64(pte, 0);
    vm.hart.hufence_gvma(None, None);
    vm.skip();
    let (c, _, htval, _) = TestVm::trap(vm.run());
    assert_eq!((c, htval), (cause::LOAD_GUEST_PAGE_FAULT, 0xc000_2000 >> 2));
}

#[test]
fn hugatp_write_flushes_and_bare_gstage_is_identity_under_the_pmc() {
    // Writing hugatp (even the same value) drops cached translations.
    let mut vm = TestVm::new();
    let pte = vm.g_map(0xc000_4000, TestVm::hpa(0x8080_4000), 0, G_RWX);
    vm.write_u64(0x8080_4000, 1);
    vm.write_u64(0x8080_5000, 2);
    vm.load_program("li t0, 0xc0004000\n1: ld a0, 0(t0)\necall\nj 1b\n");
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 1);
    vm.hv
        .phys_mem()
        .store_u64(pte, ((TestVm::hpa(0x8080_5000) >> 12) << 10) | G_RWX);
    let g = vm.csr(HUGATP);
    vm.set_csr(HUGATP, g);
    vm.skip();
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 2);
    // The VMID field of hugatp is fixed by the driver.
    vm.set_csr(HUGATP, g | (0x3fff << 44));
    assert_eq!((vm.csr(HUGATP) >> 44) & 0x3fff, VMID as u64);
}

#[test]
fn instruction_page_fault_delegated_to_the_guest() {
    // A VS page without X: fetching from it is an instruction page fault (12), which the
    // guest handles itself.
    let (mut vm, _) = vm_with_pt(
        "
        la t0, handler
        csrw stvec, t0
        li t0, 0x50000000
        jalr ra, 0(t0)
    handler:
        csrr s0, scause
        csrr s1, stval
        csrr s2, sepc
        ecall
        ",
        |vm| {
            let mut pt = VsPt::with_identity(3, vm);
            pt.map(
                vm,
                0x5000_0000,
                0x8070_0000,
                0,
                PTE_V | PTE_R | PTE_W | PTE_A | PTE_D,
            );
            pt
        },
    );
    vm.set_csr(HUEDELEG, 1 << cause::INST_PAGE_FAULT);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), cause::INST_PAGE_FAULT);
    assert_eq!(vm.x(r::S1), 0x5000_0000);
    assert_eq!(vm.x(r::S2), 0x5000_0000);
    assert_eq!(vm.csr(HUVSCAUSE), cause::INST_PAGE_FAULT);
}

/// Two hot pages on one slot of the direct-mapped software TLB (16 MiB apart) trade places
/// with the entries it evicted instead of being walked for on every access; and an evicted
/// entry goes with `sfence.vma` like any other.
#[test]
fn pages_sharing_a_tlb_slot_are_not_walked_for_again() {
    let a_pte = std::cell::Cell::new(0);
    let (mut vm, _pt) = vm_with_pt(
        "
        li s0, 0x30000000
        li s1, 0x31000000
        li s2, 2000
        li a0, 0
    loop:
        ld t0, 0(s0)
        add a0, a0, t0
        ld t1, 0(s1)
        add a0, a0, t1
        sd a0, 8(s0)
        sd a0, 8(s1)
        addi s2, s2, -1
        bnez s2, loop
        # Remap 0x3000_0000 (s5 = the new PTE, at s4): its entries are the evicted ones now.
        sd s5, 0(s4)
        sfence.vma s0
        ld s3, 0(s0)
        sd a0, 8(s0)
        ecall
        ",
        |vm| {
            let mut pt = VsPt::with_identity(3, vm);
            a_pte.set(pt.map(vm, 0x3000_0000, 0x8070_5000, 0, VS_RWX));
            pt.map(vm, 0x3100_0000, 0x8070_6000, 0, VS_RWX);
            pt
        },
    );
    vm.hart.set_gpr(r::S4, a_pte.get());
    vm.hart
        .set_gpr(r::S5, ((0x8070_7000u64 >> 12) << 10) | VS_RWX);
    vm.write_u64(0x8070_5000, 3);
    vm.write_u64(0x8070_6000, 4);
    vm.write_u64(0x8070_7000, 0x77);
    let before = vm.hart.stats().tlb_fills;
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 2000 * 7);
    assert_eq!(vm.read_u64(0x8070_5008), 2000 * 7);
    assert_eq!(vm.read_u64(0x8070_6008), 2000 * 7);
    assert_eq!(
        vm.x(r::S3),
        0x77,
        "read through the old mapping after sfence.vma"
    );
    assert_eq!(
        vm.read_u64(0x8070_7008),
        2000 * 7,
        "stored through the old mapping"
    );
    let s = vm.hart.stats();
    // Each iteration evicts both pages from both tables: 8000 walks without the victims.
    let walks = s.tlb_fills - before;
    assert!(walks < 40, "{walks} page walks");
    assert!(s.tlb_refound >= 4 * 1999, "{} refound", s.tlb_refound);
}

//! `hlv` / `hlvx` / `hsv` issued from HU-mode: guest virtual memory through the guest's own
//! translation (vsatp, hustatus.SPVP for the privilege, vsstatus.SUM/MXR) and the G-stage.

mod common;

use common::*;
use dvext::csr::*;
use dvext::GuestAccessFault;

const KPAGE: u64 = 0x4000_0000; // VS-only RW
const UPAGE: u64 = 0x4000_1000; // U RW
const XPAGE: u64 = 0x4000_2000; // X only
const HOLEPAGE: u64 = 0x4000_3000; // VS-mapped to unmapped guest-physical memory
const SPLIT: u64 = 0x4000_5000; // followed by an unmapped page at 0x4000_6000
const HOLE: u64 = 0x1000_0000;

fn setup_pt() -> (TestVm, VsPt) {
    let mut vm = TestVm::new();
    let mut pt = VsPt::with_identity(3, &vm);
    pt.map(&vm, KPAGE, 0x8070_0000, 0, VS_RWX);
    pt.map(&vm, UPAGE, 0x8070_1000, 0, VS_RWX | PTE_U);
    pt.map(&vm, XPAGE, 0x8070_2000, 0, PTE_V | PTE_X | PTE_A);
    pt.map(&vm, HOLEPAGE, HOLE, 0, VS_RWX);
    pt.map(&vm, SPLIT, 0x8070_5000, 0, VS_RWX);
    vm.set_csr(HUVSATP, pt.satp());
    vm.write_u64(0x8070_0000, 0x8877_6655_4433_2211);
    vm.write_u64(0x8070_1ff8, 0x0102_0304_0506_0708);
    vm.write_u32(0x8070_2000, 0x0000_0513);
    (vm, pt)
}

fn setup() -> TestVm {
    setup_pt().0
}

#[test]
fn hlv_reads_through_both_stages_and_zero_extends() {
    let mut vm = setup();
    assert_eq!(vm.hart.hlv(KPAGE, 8), Ok(0x8877_6655_4433_2211));
    assert_eq!(vm.hart.hlv(KPAGE, 4), Ok(0x4433_2211));
    assert_eq!(vm.hart.hlv(KPAGE + 6, 2), Ok(0x8877));
    assert_eq!(vm.hart.hlv(KPAGE + 7, 1), Ok(0x88));
    assert_eq!(vm.hart.hlv(KPAGE + 3, 4), Ok(0x7766_5544), "misaligned");
    // The identity mapping reaches guest RAM too.
    assert_eq!(vm.hart.hlv(0x8070_0000, 8), Ok(0x8877_6655_4433_2211));
}

#[test]
fn hsv_writes_guest_memory() {
    let (mut vm, mut pt) = setup_pt();
    vm.hart.hsv(KPAGE + 8, 8, 0xdead_beef_cafe_f00d).unwrap();
    vm.hart.hsv(KPAGE + 16, 4, 0xffff_ffff_1234_5678).unwrap();
    vm.hart.hsv(KPAGE + 21, 2, 0xabcd).unwrap();
    vm.hart.hsv(KPAGE + 1, 1, 0x99).unwrap();
    assert_eq!(vm.read_u64(0x8070_0008), 0xdead_beef_cafe_f00d);
    assert_eq!(vm.read_u64(0x8070_0010), 0x00ab_cd00_1234_5678);
    assert_eq!(vm.read_u64(0x8070_0000), 0x8877_6655_4433_9911);
    // Across a page boundary onto a page mapped elsewhere.
    pt.map(&vm, KPAGE + 0x1000 * 16, 0x8070_9000, 0, VS_RWX);
    pt.map(&vm, KPAGE + 0x1000 * 17, 0x8070_3000, 0, VS_RWX);
    vm.hart
        .hsv(KPAGE + 0x1000 * 17 - 3, 8, 0x1122_3344_5566_7788)
        .unwrap();
    assert_eq!(vm.read(0x8070_9ffd, 3), [0x88, 0x77, 0x66]);
    assert_eq!(vm.read(0x8070_3000, 5), [0x55, 0x44, 0x33, 0x22, 0x11]);
    assert_eq!(
        vm.hart.hlv(KPAGE + 0x1000 * 17 - 3, 8),
        Ok(0x1122_3344_5566_7788)
    );
}

#[test]
fn hlv_faults_are_returned_not_taken() {
    let mut vm = setup();
    // No VS-stage mapping: load page fault.
    assert_eq!(
        vm.hart.hlv(0x5000_0000, 8),
        Err(GuestAccessFault {
            cause: cause::LOAD_PAGE_FAULT,
            tval: 0x5000_0000,
            gpa: 0
        })
    );
    assert_eq!(
        vm.hart.hsv(0x5000_0008, 4, 0),
        Err(GuestAccessFault {
            cause: cause::STORE_PAGE_FAULT,
            tval: 0x5000_0008,
            gpa: 0
        })
    );
    // VS-mapped to a guest-physical hole: guest-page fault with the GPA.
    assert_eq!(
        vm.hart.hlv(HOLEPAGE + 0x10, 8),
        Err(GuestAccessFault {
            cause: cause::LOAD_GUEST_PAGE_FAULT,
            tval: HOLEPAGE + 0x10,
            gpa: HOLE + 0x10
        })
    );
    assert_eq!(
        vm.hart.hsv(HOLEPAGE + 0x18, 8, 1),
        Err(GuestAccessFault {
            cause: cause::STORE_GUEST_PAGE_FAULT,
            tval: HOLEPAGE + 0x18,
            gpa: HOLE + 0x18
        })
    );
    // A store whose second half faults writes nothing.
    vm.write_u64(0x8070_5ff8, 0x5555_5555_5555_5555);
    let e = vm.hart.hsv(SPLIT + 0xffc, 8, 0).unwrap_err();
    assert_eq!(e.cause, cause::STORE_PAGE_FAULT);
    assert_eq!(e.tval, SPLIT + 0x1000);
    assert_eq!(vm.read_u64(0x8070_5ff8), 0x5555_5555_5555_5555);
    let e = vm.hart.hlv(SPLIT + 0xffe, 4).unwrap_err();
    assert_eq!(e.cause, cause::LOAD_PAGE_FAULT);
    // Nothing was delivered to the guest.
    assert_eq!(vm.csr(HUVSCAUSE), 0);
    assert_eq!(vm.csr(UCAUSE), 0);
}

#[test]
fn hlv_privilege_follows_spvp_and_sum() {
    let mut vm = setup();
    // SPVP = 1 (VS): a U page needs SUM.
    assert_eq!(
        vm.hart.hlv(UPAGE + 0xff8, 8).unwrap_err().cause,
        cause::LOAD_PAGE_FAULT
    );
    let s = vm.csr(HUVSSTATUS);
    vm.set_csr(HUVSSTATUS, s | SSTATUS_SUM);
    assert_eq!(vm.hart.hlv(UPAGE + 0xff8, 8), Ok(0x0102_0304_0506_0708));
    vm.set_csr(HUVSSTATUS, s);
    // SPVP = 0 (VU): U pages yes, others no.
    let hs = vm.csr(HUSTATUS);
    vm.set_csr(HUSTATUS, hs & !HSTATUS_SPVP);
    assert_eq!(vm.hart.hlv(UPAGE + 0xff8, 8), Ok(0x0102_0304_0506_0708));
    assert_eq!(
        vm.hart.hlv(KPAGE, 8).unwrap_err().cause,
        cause::LOAD_PAGE_FAULT
    );
    assert_eq!(
        vm.hart.hsv(KPAGE, 8, 0).unwrap_err().cause,
        cause::STORE_PAGE_FAULT
    );
    vm.hart.hsv(UPAGE, 2, 0x4242).unwrap();
    assert_eq!(vm.read_u64(0x8070_1000), 0x4242);
}

#[test]
fn hlvx_needs_execute_permission() {
    let (mut vm, mut pt) = setup_pt();
    // XPAGE is execute-only: hlvx reads it, hlv does not (without MXR).
    assert_eq!(vm.hart.hlvx(XPAGE, 4), Ok(0x0000_0513));
    assert_eq!(vm.hart.hlvx(XPAGE, 2), Ok(0x0513));
    assert_eq!(
        vm.hart.hlv(XPAGE, 4).unwrap_err().cause,
        cause::LOAD_PAGE_FAULT
    );
    let s = vm.csr(HUVSSTATUS);
    vm.set_csr(HUVSSTATUS, s | SSTATUS_MXR);
    assert_eq!(vm.hart.hlv(XPAGE, 4), Ok(0x0000_0513));
    // KPAGE is RWX: both work. A data page without X: hlvx faults.
    vm.set_csr(HUVSSTATUS, s);
    pt.map(
        &vm,
        0x4000_4000,
        0x8070_4000,
        0,
        PTE_V | PTE_R | PTE_W | PTE_A | PTE_D,
    );
    vm.hart.hufence_gvma(None, None);
    assert_eq!(
        vm.hart.hlvx(0x4000_4000, 4).unwrap_err().cause,
        cause::LOAD_PAGE_FAULT
    );
    assert_eq!(vm.hart.hlv(0x4000_4000, 4), Ok(0));
    // The G-stage X bit matters too for hlvx.
    vm.g_map(0xc000_0000, TestVm::hpa(0x8070_8000), 0, G_RWX & !PTE_X);
    pt.map(&vm, 0x4000_8000, 0xc000_0000, 0, VS_RWX);
    let e = vm.hart.hlvx(0x4000_8000, 4).unwrap_err();
    assert_eq!(e.cause, cause::LOAD_GUEST_PAGE_FAULT);
    assert_eq!(e.gpa, 0xc000_0000);
    assert_eq!(vm.hart.hlv(0x4000_8000, 4), Ok(0));
}

#[test]
fn hsv_to_read_only_gstage_page_faults() {
    let (mut vm, mut pt) = setup_pt();
    vm.g_map(0xc000_1000, TestVm::hpa(0x8070_8000), 0, G_RWX & !PTE_W);
    pt.map(&vm, 0x4000_9000, 0xc000_1000, 0, VS_RWX);
    assert_eq!(
        vm.hart.hsv(0x4000_9010, 8, 7),
        Err(GuestAccessFault {
            cause: cause::STORE_GUEST_PAGE_FAULT,
            tval: 0x4000_9010,
            gpa: 0xc000_1010
        })
    );
    assert_eq!(vm.hart.hlv(0x4000_9010, 8), Ok(0));
}

#[test]
fn hsv_into_code_is_seen_by_the_next_huret() {
    // A guest runs code at 0x8000_0000; the hypervisor patches it through hsv.
    let mut vm = TestVm::with_program(
        "
        .option norvc
    1:  li a0, 1
        ecall
        j 1b
        ",
    );
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 1);
    // li a0, 2
    vm.hart.hsv(RAM_GPA, 4, 0x0020_0513).unwrap();
    vm.set_csr(UEPC, RAM_GPA);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 2);
}

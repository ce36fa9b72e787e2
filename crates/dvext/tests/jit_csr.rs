//! CSR accesses inside compiled regions: the engine runs each one and the region goes on after
//! it, unless the access changed what the region runs under (the TLB tables `sstatus.SUM`
//! selects) or made an interrupt deliverable, which must then be taken before the next
//! instruction, exactly as the interpreter does.

mod common;

use common::*;
use dvext::csr::*;

/// A hot loop brackets its work with `local_irq_save`/`restore` (`csrci`/`csrsi sstatus`, as
/// Linux does around per-CPU counters) and writes `sscratch`; on iteration `POST` it makes a
/// software interrupt pending while interrupts are masked.
const IRQ_GUEST: &str = "
    .option norvc
    la t0, handler
    csrw stvec, t0
    csrsi sie, 2          # SSIE
    csrsi sstatus, 2      # SIE
    la s4, restored
    li s2, 0
    li s3, POST
loop:
    csrci sstatus, 2      # save: mask
    addi s2, s2, 1
    csrw sscratch, s2
    bne s2, s3, unmask
    csrsi sip, 2          # post SSIP while masked
unmask:
    csrsi sstatus, 2      # restore: the interrupt is taken right after this
restored:
    j loop
handler:
    csrr s0, scause
    csrr s1, sepc
    csrr s5, sscratch
    ecall
";

#[test]
fn an_interrupt_unmasked_in_compiled_code_is_taken_at_the_next_instruction() {
    const POST: u64 = 5000;
    let mut vm = TestVm::with_program(&IRQ_GUEST.replace("POST", &POST.to_string()));
    vm.set_csr(HUIDELEG, MIP_VSSIP);
    // Compiled once the whole loop is hot: one region holds the loop.
    vm.hart.enable_jit(100, None).unwrap();
    // Missed, the interrupt may never be taken: the watchdog fails the test.
    vm.timeout = std::time::Duration::from_secs(10);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), cause::INTERRUPT | IRQ_S_SOFT);
    assert_eq!(
        vm.x(r::S1),
        vm.x(r::S4),
        "taken right after the sstatus write"
    );
    assert_eq!(vm.x(r::S2), POST, "not one iteration later");
    assert_eq!(vm.x(r::S5), POST);
    // The loop ran in compiled code: the CSR accesses did not send each iteration back
    // through the run loop (the engine used to leave compiled code before every one).
    let jit = vm.hart.stats().jit;
    assert!(jit.compiled > 0);
    assert!(
        jit.entered < POST / 10,
        "run loop entered compiled code {} times in {POST} iterations",
        jit.entered
    );
}

const USER_PAGE: u64 = 0x4000_0000;

/// Each iteration loads from a user page with SUM set (allowed) and again after clearing it
/// (a load page fault, which the guest's handler counts and skips). The `jr` makes the
/// region holding both loads start with SUM set, so its code was entered with the TLB tables
/// of SUM: the second load must not use them.
const SUM_GUEST: &str = "
    .option norvc
    la t0, handler
    csrw stvec, t0
    li t0, 1 << 18        # SUM
    li s1, USER_PAGE
    la s6, body
    li s2, 0
    li s3, 2000
    li s4, 0
loop:
    csrs sstatus, t0
    jr s6
body:
    ld a0, 0(s1)
    csrc sstatus, t0
    ld a1, 0(s1)          # faults: SUM is clear
    addi s2, s2, 1
    bne s2, s3, loop
    ecall
handler:
    addi s4, s4, 1
    csrr t1, sepc
    addi t1, t1, 4
    csrw sepc, t1
    sret
";

#[test]
fn clearing_sum_in_compiled_code_applies_to_the_next_load() {
    let mut vm = TestVm::with_program(&SUM_GUEST.replace("USER_PAGE", &USER_PAGE.to_string()));
    let mut pt = VsPt::with_identity(3, &vm);
    pt.map(
        &vm,
        USER_PAGE,
        0x8070_7000,
        0,
        PTE_V | PTE_R | PTE_W | PTE_U | PTE_A | PTE_D,
    );
    vm.write_u64(0x8070_7000, 0xaaaa);
    vm.set_csr(HUVSATP, pt.satp());
    vm.set_csr(HUEDELEG, 1 << cause::LOAD_PAGE_FAULT);
    // Compiled once the whole loop is hot, so that both loads end up in one region.
    vm.hart.enable_jit(100, None).unwrap();
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 0xaaaa);
    assert_eq!(vm.x(r::S4), 2000, "every load without SUM faulted");
    assert!(vm.hart.stats().jit.compiled > 0);
}

/// `instret` read inside a compiled loop counts the instructions the region retired before it
/// (the counter CSRs are left to the interpreter for that reason).
#[test]
fn instret_read_in_a_compiled_loop_is_exact() {
    let mut vm = TestVm::with_program(
        "
        .option norvc
        li t1, 1000
        rdinstret s0
    loop:
        addi t1, t1, -1
        csrw sscratch, t1
        bnez t1, loop
        rdinstret s1
        ecall
    ",
    );
    vm.set_csr(HUCOUNTEREN, 7);
    vm.hart.enable_jit(1, None).unwrap();
    vm.run_to_ecall();
    // rdinstret s0 itself, then 3 per iteration.
    assert_eq!(vm.x(r::S1) - vm.x(r::S0), 1 + 3 * 1000);
    assert!(vm.hart.stats().jit.compiled > 0);
}

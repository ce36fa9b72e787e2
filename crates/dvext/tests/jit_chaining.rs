//! Compiled regions run one after another without the run loop in between (calls and returns
//! across pages): the registers, the retired count and a fault taken in a region reached that
//! way must be exactly what the interpreter gives.

mod common;

use common::*;
use dvext::csr::*;
use dvext::Exit;

/// A loop on the first page calls a function on the second page, which calls one on the third
/// (direct jumps out of a page, returns through `jalr`); on iteration `TRIPS` the innermost
/// function loads through a pointer into unmapped guest-physical memory: a guest-page fault
/// taken inside a region entered from another region.
const CALLS: &str = "
    .option norvc
    li s0, DATA
    li s1, 0
    li s2, TRIPS
    li s3, 0
loop:
    addi s1, s1, 1
    mv a0, s1
    jal ra, f1
    add s3, s3, a0
    bne s1, s2, loop
    ecall
    .balign 4096
f1:
    addi sp, sp, -16
    sd ra, 8(sp)
    slli a0, a0, 1
    jal ra, f2
    addi a0, a0, 3
    ld ra, 8(sp)
    addi sp, sp, 16
    ret
    .balign 4096
f2:
    ld t0, 0(s0)
    add a0, a0, t0
    addi t1, a0, -BAD
    bnez t1, 1f
    li s0, 0x40000000
1:
    sd a0, 8(s0)
    ret
";

/// Run the program to its first exit (see [`TestVm::run_recorded`]).
fn run(trips: u64, bad: u64, jit: bool) -> Recorded {
    let src = CALLS
        .replace("TRIPS", &trips.to_string())
        .replace("BAD", &bad.to_string())
        .replace("DATA", &format!("{DATA:#x}"));
    let mut vm = TestVm::with_program(&src);
    vm.write_u64(DATA, 7);
    // A stack at the top of the data page.
    vm.hart.set_gpr(r::SP, DATA + 4096);
    vm.run_recorded(jit)
}

#[test]
fn chained_regions_match_the_interpreter() {
    let interp = run(300, 0, false);
    assert!(matches!(
        interp.exit,
        Exit::Trap {
            cause: cause::ECALL_VS,
            ..
        }
    ));
    assert_matches_interpreter(&interp, &run(300, 0, true), 4);
}

#[test]
fn a_fault_in_a_chained_region_matches_the_interpreter() {
    // a0 on entry to f2 on trip k is 2k, plus the 7 loaded: trip 200 faults.
    let interp = run(300, 407, false);
    let (cause, tval, _, _) = TestVm::trap(interp.exit);
    assert_eq!(cause, cause::STORE_GUEST_PAGE_FAULT);
    assert_eq!(tval, 0x4000_0008);
    assert_eq!(interp.regs[r::S1], 200, "faulted on trip 200");
    assert_matches_interpreter(&interp, &run(300, 407, true), 4);
}

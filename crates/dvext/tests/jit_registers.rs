//! Compiled code keeps the registers a part writes in host registers and stores them to the
//! register file only where something can look there: before the engine runs an instruction
//! for the region, before a memory access that may fault, and where the part ends. Registers
//! written several times in one part must still be exactly the interpreter's at each of those
//! points.

mod common;

use common::*;
use dvext::csr::*;
use dvext::Exit;

/// A loop whose body writes `t0`, `a2` and `a5` several times each; an atomic (run by the
/// interpreter for the region) reads `a2` right after its last write; on trip `BAD` the base
/// register is pointed at unmapped guest-physical memory and the load after two writes of `a5`
/// faults.
const PROGRAM: &str = "
    .option norvc
    li s0, DATA
    li s1, 0
    li s2, TRIPS
    li s3, 0
loop:
    addi s1, s1, 1
    slli t0, s1, 1
    add t0, t0, s1
    xori t0, t0, 5
    mv a2, t0
    addi a2, a2, 1
    amoadd.d a3, a2, (s0)
    add a4, a3, t0
    addi t1, s1, -BAD
    bnez t1, 1f
    li s0, 0x40000000
1:
    addi a5, a4, 7
    addi a5, a5, 1
    ld a6, 8(s0)
    add s3, s3, a6
    bne s1, s2, loop
    ecall
";

/// Run to the first exit (see [`TestVm::run_recorded`]).
fn run(bad: u64, jit: bool) -> Recorded {
    let src = PROGRAM
        .replace("TRIPS", "300")
        .replace("BAD", &bad.to_string())
        .replace("DATA", &format!("{DATA:#x}"));
    let mut vm = TestVm::with_program(&src);
    vm.write_u64(DATA, 11);
    vm.write_u64(DATA + 8, 5);
    vm.run_recorded(jit)
}

#[test]
fn registers_written_many_times_in_a_part_match_the_interpreter() {
    let interp = run(0, false);
    assert!(matches!(
        interp.exit,
        Exit::Trap {
            cause: cause::ECALL_VS,
            ..
        }
    ));
    assert_eq!(interp.regs[r::S3], 300 * 5);
    assert_matches_interpreter(&interp, &run(0, true), 1);
}

#[test]
fn a_fault_sees_the_last_write_of_each_register_before_it() {
    let interp = run(100, false);
    let (cause, tval, _, _) = TestVm::trap(interp.exit);
    assert_eq!(cause, cause::LOAD_GUEST_PAGE_FAULT);
    assert_eq!(tval, 0x4000_0008);
    assert_eq!(interp.regs[r::S1], 100, "faulted on trip 100");
    assert_matches_interpreter(&interp, &run(100, true), 1);
}

//! Compiled regions and interrupt delivery: a region's loops give the run loop back its turn
//! to look at the timer and interrupts within the same block budget as the interpreter, however
//! much of that budget is left when the region is entered.

mod common;

use std::time::Duration;

use common::*;
use dvext::csr::*;

/// The timer set-up both guests start with (the timer is due 5 ms after the start; the
/// handler records when it ran and why in s7 and s0, then stops the guest), around `body`.
fn guest(body: &str) -> String {
    format!("{SETUP}{body}{HANDLER}")
}

const SETUP: &str = "
    .option norvc
    la t0, handler
    csrw stvec, t0
    li t0, 0x20
    csrs sie, t0
    rdtime s5
    li t0, 50000          # 5 ms at 10 MHz
    add s5, s5, t0
    csrw stimecmp, s5
    csrsi sstatus, 2
";

const HANDLER: &str = "
handler:
    rdtime s7
    csrr s0, scause
    ecall
";

/// Run the guest around `body` with blocks compiled after `threshold` runs until its timer
/// handler stops it; checks that the interrupt was the timer's, taken promptly: well within a
/// second of the deadline even on a loaded host (the run loop reads the clock every few
/// thousand instructions). What: names the case in failures.
fn run_until_the_timer(body: &str, threshold: u32, what: &str) -> TestVm {
    let mut vm = TestVm::with_program(&guest(body));
    vm.set_csr(HUIDELEG, MIP_VSTIP);
    vm.set_csr(HUCOUNTEREN, 7);
    vm.hart.enable_jit(threshold, None).unwrap();
    // Without the interrupt the guest never stops: the watchdog fails the test.
    vm.timeout = Duration::from_secs(20);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), cause::INTERRUPT | IRQ_S_TIMER, "{what}");
    assert!(vm.hart.stats().jit.compiled > 0, "{what}: nothing compiled");
    let late = vm.x(r::S7) - vm.x(r::S5);
    assert!(
        late < 10_000_000,
        "{what}: taken {late} ticks after the deadline"
    );
    vm
}

/// An outer loop whose block ends at a `rdtime` (a CSR access, which ends a part) and a compiled
/// inner loop of `INNER` iterations.
const TIMER_BODY: &str = "
    li s2, 0
outer:
    rdtime s6
    addi s2, s2, 1
    li t1, INNER
inner:
    addi t1, t1, -1
    bnez t1, inner
    j outer
";

#[test]
fn compiled_loops_take_a_due_timer_whatever_budget_they_start_with() {
    // Different inner trip counts make the region start with every remainder of the budget,
    // including a budget that the block entering it has just used up.
    for inner in 1..=40u32 {
        let body = TIMER_BODY.replace("INNER", &inner.to_string());
        run_until_the_timer(&body, 1, &format!("inner {inner}"));
    }
}

/// A loop that never leaves its region and runs through three of its parts each trip: two
/// moves forward (which do not look at the budget) and one back to the start (which does).
const PARTS_BODY: &str = "
    li s2, 0
    li s3, 0
loop:
    addi s2, s2, 1
    andi t2, s2, 1
    beqz t2, even
    addi s3, s3, 1
even:
    xori s4, s2, 3
    j loop
";

#[test]
fn a_loop_through_several_parts_of_a_region_takes_a_due_timer() {
    // Compiled after 8 runs, when the blocks of the loop have run often enough to join the
    // region of its first one.
    let vm = run_until_the_timer(PARTS_BODY, 8, "three parts");
    let s = vm.hart.stats();
    assert!(s.jit.parts > s.jit.compiled, "the loop spans several parts");
}

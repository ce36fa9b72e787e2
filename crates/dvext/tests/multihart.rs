//! Two vCPUs of one VM on two host threads sharing guest memory: AMOs are atomic across harts,
//! and LR/SC builds a working lock.

mod common;

use std::time::Duration;

use common::*;
use dvext::{Exit, Hart};

const N: u64 = 100_000;

/// Start barrier, so both harts really run their loops at the same time: each hart sets its
/// flag at DATA + 0x100 + 4 * vcpu and waits for the other's.
const BARRIER: &str = "
        csrr t6, sscratch
        slli t6, t6, 2
        li t5, 0x80100100
        add t4, t5, t6
        li t3, 1
        sw t3, 0(t4)
        xori t6, t6, 4
        add t4, t5, t6
    99: lw t3, 0(t4)
        beqz t3, 99b
";

/// Run `vm.hart` (vCPU 0) and a second hart (vCPU 1, entry `RAM_GPA` too) concurrently until
/// both exit; hart 1 sees sscratch = 1 so programs can tell them apart.
fn run_two(vm: &mut TestVm) -> (Exit, Exit, Hart) {
    let mut h1 = vm.add_hart(1);
    h1.csr_write(dvext::csr::HUVSSCRATCH, 1).unwrap();
    let intr = vm.intr.clone();
    let t = std::thread::spawn(move || {
        let e = run_with_watchdog(&mut h1, &intr, Duration::from_secs(120));
        (e, h1)
    });
    vm.timeout = Duration::from_secs(120);
    let e0 = vm.run();
    let (e1, h1) = t.join().unwrap();
    (e0, e1, h1)
}

#[test]
fn amoadd_from_two_harts_is_exact() {
    let mut vm = TestVm::with_program(&format!(
        "
        {BARRIER}
        li t0, {DATA:#x}
        li t1, {N}
        addi t3, t0, 8
        li t2, 1
    1:  amoadd.w zero, t2, (t0)
        amoadd.d zero, t2, (t3)
        addi t1, t1, -1
        bnez t1, 1b
        ecall
        "
    ));
    let (e0, e1, _) = run_two(&mut vm);
    vm.expect_ecall(e0);
    vm.expect_ecall(e1);
    assert_eq!(vm.read_u32(DATA) as u64, 2 * N);
    assert_eq!(vm.read_u64(DATA + 8), 2 * N);
}

#[test]
fn lr_sc_spinlock_protects_a_plain_counter() {
    // DATA: lock word; DATA + 64: counter updated with plain lw/addi/sw inside the lock.
    let mut vm = TestVm::with_program(&format!(
        "
        {BARRIER}
        li s0, {DATA:#x}
        addi s1, s0, 64
        li s2, {N}
    next:
    acquire:
        lr.w.aq t0, (s0)
        bnez t0, acquire
        li t1, 1
        sc.w t2, t1, (s0)
        bnez t2, acquire
        lw t3, 0(s1)          # critical section: not atomic on its own
        addi t3, t3, 1
        sw t3, 0(s1)
        lw t4, 4(s1)
        addi t4, t4, 2
        sw t4, 4(s1)
        fence rw, w
        sw zero, 0(s0)        # release
        addi s2, s2, -1
        bnez s2, next
        ecall
        "
    ));
    let (e0, e1, _) = run_two(&mut vm);
    vm.expect_ecall(e0);
    vm.expect_ecall(e1);
    assert_eq!(vm.read_u32(DATA + 64) as u64, 2 * N);
    assert_eq!(vm.read_u32(DATA + 68) as u64, 4 * N);
    assert_eq!(vm.read_u32(DATA), 0, "lock released");
}

/// Hart 1 produces 1000 messages through a one-slot mailbox guarded by flags; hart 0
/// consumes them, sums the payloads into a0 and releases the slot with an AMO. Both wait
/// for the flag in loops that run `spin` each time round.
fn mailbox_message_passing(spin: &str) {
    let mut vm = TestVm::with_program(&format!(
        "
        li s0, {DATA:#x}           # 0: full flag, 8: payload
        csrr t0, sscratch
        bnez t0, producer
    consumer:
        li s1, 1000
        li s2, 0
    1:  lw t1, 0(s0)
        bnez t1, 3f
        {spin}
        j 1b
    3:  fence r, r
        ld t2, 8(s0)
        add s2, s2, t2
        fence rw, w
        amoswap.w zero, zero, (s0)
        addi s1, s1, -1
        bnez s1, 1b
        mv a0, s2
        ecall
    producer:
        li s1, 1
        li s3, 1001
    2:  lw t1, 0(s0)
        beqz t1, 4f
        {spin}
        j 2b
    4:  fence rw, w
        sd s1, 8(s0)
        fence w, w
        li t1, 1
        sw t1, 0(s0)
        addi s1, s1, 1
        bne s1, s3, 2b
        ecall
        "
    ));
    let (e0, e1, _) = run_two(&mut vm);
    vm.expect_ecall(e0);
    vm.expect_ecall(e1);
    assert_eq!(vm.x(r::A0), 1000 * 1001 / 2);
}

#[test]
fn amoswap_spinlock_and_message_passing() {
    mailbox_message_passing("");
}

#[test]
fn pause_retires_as_a_hint_and_is_counted() {
    // Zihintpause: `pause` is `fence w, 0`; it has no architectural effect beyond retiring.
    // The hart counts it, and gives its host CPU away once per 32 pauses in a row.
    let mut vm = TestVm::with_program(
        "
        li s0, 0
        li s1, 50
    1:  .insn i 0x0f, 0, x0, x0, 0x010
        addi s0, s0, 1
        bne s0, s1, 1b
        ecall
        ",
    );
    let before = vm.hart.stats().instret;
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), 50);
    assert_eq!(vm.hart.stats().pauses, 50);
    assert_eq!(
        vm.hart.stats().pause_yields,
        1,
        "one host CPU yield per 32 pauses in a row"
    );
    assert_eq!(vm.hart.stats().instret - before, 2 + 50 * 3);
}

#[test]
fn spin_wait_with_pause_hands_off_messages() {
    // Both sides wait with `pause` in the loop, the way Linux's cpu_relax() does.
    mailbox_message_passing(".insn i 0x0f, 0, x0, x0, 0x010 # pause");
}

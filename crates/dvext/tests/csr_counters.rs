//! Zicntr from a guest: time follows the platform timebase plus hutimedelta; cycle, time and
//! instret are gated by hucounteren (and scounteren for VU) with virtual-instruction exits.

mod common;

use std::time::Duration;

use common::*;
use dvext::csr::*;
use dvext::{Exit, TIMEBASE_HZ};

#[test]
fn rdtime_increases_and_tracks_the_timebase() {
    let mut vm = TestVm::with_program(
        "
        rdtime s0
        li t0, 2000000
    1:  addi t0, t0, -1
        bnez t0, 1b
        rdtime s1
        ecall
        ",
    );
    vm.set_csr(HUCOUNTEREN, 1 << 1);
    let before = vm.csr(TIME);
    std::thread::sleep(Duration::from_millis(2));
    vm.run_to_ecall();
    std::thread::sleep(Duration::from_millis(2));
    let after = vm.csr(TIME);
    let (s0, s1) = (vm.x(r::S0), vm.x(r::S1));
    assert!(before < s0, "{before} < {s0}");
    assert!(s0 < s1, "{s0} < {s1}");
    assert!(s1 < after, "{s1} < {after}");
    // 10 MHz: the 2 ms sleeps alone are 20000 ticks.
    assert!(after - before >= 2 * 20_000 * TIMEBASE_HZ / 10_000_000);
}

#[test]
fn hutimedelta_offsets_guest_time() {
    let delta = 1u64 << 40;
    let mut vm = TestVm::with_program("rdtime s0\necall\nrdtime s1\necall\n");
    vm.set_csr(HUCOUNTEREN, 1 << 1);
    vm.set_csr(HUTIMEDELTA, delta);
    let host_before = vm.platform.timebase().now();
    vm.run_to_ecall();
    let host_after = vm.platform.timebase().now();
    let s0 = vm.x(r::S0);
    assert!(
        (host_before + delta..=host_after + delta).contains(&s0),
        "{s0:#x} not in [{:#x}, {:#x}]",
        host_before + delta,
        host_after + delta
    );
    assert_eq!(vm.csr(TIME) >> 40, 1, "HU view of time includes the delta");
    // A negative delta (two's complement) moves guest time back to near zero.
    let now = vm.platform.timebase().now();
    vm.set_csr(HUTIMEDELTA, now.wrapping_neg());
    vm.skip();
    vm.run_to_ecall();
    let s1 = vm.x(r::S1);
    assert!(
        s1 < 10 * TIMEBASE_HZ,
        "guest time {s1} should restart near 0"
    );
}

#[test]
fn counters_need_hucounteren() {
    for (insn, csr_bit) in [
        ("rdcycle a0", 0),
        ("rdtime a0", 1),
        ("rdinstret a0", 2),
        ("csrr a0, hpmcounter3", 3),
    ] {
        for enabled in [false, true] {
            let mut vm =
                TestVm::with_program(&format!(".option norvc\nli a0, 0x55\n{insn}\necall\n"));
            // All bits except this one, or only this one.
            let en = if enabled {
                1u64 << csr_bit
            } else {
                0xffff_ffff & !(1u64 << csr_bit)
            };
            vm.set_csr(HUCOUNTEREN, en);
            let e = vm.run();
            if enabled {
                vm.expect_ecall(e);
                if csr_bit == 3 {
                    assert_eq!(vm.x(r::A0), 0, "hpmcounter3 reads 0");
                } else {
                    assert_ne!(vm.x(r::A0), 0x55, "{insn}");
                }
            } else {
                assert_eq!(
                    e,
                    Exit::Trap {
                        cause: cause::VIRTUAL_INST,
                        tval: vm.read_u32(RAM_GPA + 4) as u64,
                        htval: 0,
                        htinst: 0
                    },
                    "{insn}"
                );
                assert_eq!(vm.x(r::A0), 0x55);
                assert_eq!(vm.csr(UEPC), RAM_GPA + 4);
            }
        }
    }
}

#[test]
fn counters_in_vu_also_need_scounteren() {
    let prog = "
        .option norvc
        la t0, user
        csrw sepc, t0
        li t0, 0x100
        csrc sstatus, t0
        csrw scounteren, s11     # set per run by the host
        sret
    user:
        rdtime a0
        li a1, 1
        ecall
    ";
    for (scounteren, want_exit) in [(0u64, true), (2, false)] {
        let mut vm = TestVm::with_program(prog);
        vm.set_csr(HUCOUNTEREN, 7);
        vm.hart.set_gpr(r::S11, scounteren);
        let (c, tval, _, _) = TestVm::trap(vm.run());
        if want_exit {
            assert_eq!(c, cause::VIRTUAL_INST);
            assert_eq!(tval, 0xc010_2573, "rdtime a0");
            assert_eq!(vm.x(r::A1), 0);
        } else {
            assert_eq!(c, cause::ECALL_U);
            assert_eq!(vm.x(r::A1), 1);
            assert_ne!(vm.x(r::A0), 0);
        }
    }
}

/// The hypervisor sets the guest's scounteren through huvscounteren, as firmware would before
/// the kernel runs; the guest's own `scounteren` reads the same register and VU honours it.
#[test]
fn huvscounteren_is_the_guests_scounteren() {
    let prog = "
        .option norvc
        csrr s0, scounteren
        la t0, user
        csrw sepc, t0
        li t0, 0x100
        csrc sstatus, t0
        sret
    user:
        rdtime a0
        rdcycle a1
        li a2, 1
        ecall
    ";
    let mut vm = TestVm::with_program(prog);
    assert_eq!(vm.csr(HUVSCOUNTEREN), 0, "reset value");
    vm.set_csr(HUCOUNTEREN, 7);
    vm.set_csr(HUVSCOUNTEREN, 0xffff_ffff_0000_0007);
    assert_eq!(vm.csr(HUVSCOUNTEREN), 7, "only the low 32 bits exist");
    let (c, _, _, _) = TestVm::trap(vm.run());
    assert_eq!(c, cause::ECALL_U);
    assert_eq!(vm.x(r::S0), 7, "the guest reads what the hypervisor wrote");
    assert_eq!(vm.x(r::A2), 1);
    assert_ne!(vm.x(r::A0), 0);
}

#[test]
fn instret_counts_retired_instructions_exactly() {
    let mut vm = TestVm::with_program(
        "
        .option norvc
        li t0, 1
        li t1, 2
        rdinstret s0          # 2 instructions retired before it
        nop
        nop
        nop
        nop
        nop
        rdinstret s1          # s0 + 6
        li t2, 10
    1:  addi t2, t2, -1       # 10 x 2 instructions
        bnez t2, 1b
        rdinstret s2          # s1 + 1 + 1 + 20
        rdcycle s3            # cycle counts like instret here
        ecall
        rdinstret s4
        ecall
        ",
    );
    vm.set_csr(HUCOUNTEREN, 7);
    vm.run_to_ecall();
    let s0 = vm.x(r::S0);
    assert_eq!(s0, 2, "rdinstret sees the instructions before it");
    assert_eq!(vm.x(r::S1), s0 + 6);
    assert_eq!(vm.x(r::S2), vm.x(r::S1) + 22);
    assert!(vm.x(r::S3) > vm.x(r::S2));
    // The trapping ecall does not retire.
    let retired = vm.hart.stats().instret;
    assert_eq!(retired, vm.x(r::S2) + 2);
    vm.skip();
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S4), retired, "counting continues across exits");
}

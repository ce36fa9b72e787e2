//! Privilege and trap routing with V=1: what exits to HU-mode, what huedeleg/huideleg hand to
//! the guest's own handler, privileged instructions from VS/VU, interrupts and Sstc, WFI.

mod common;

use common::*;
use dvext::csr::*;
use dvext::Exit;

#[test]
fn ecall_from_vs_exits_with_cause_10() {
    let mut vm = TestVm::with_program(
        "
        .option norvc
        li a0, 42
        ecall
        li a0, 43
        ecall
        ",
    );
    let e = vm.run();
    assert_eq!(
        e,
        Exit::Trap {
            cause: cause::ECALL_VS,
            tval: 0,
            htval: 0,
            htinst: 0
        }
    );
    assert_eq!(vm.csr(UEPC), RAM_GPA + 4);
    assert_eq!(vm.csr(UCAUSE), cause::ECALL_VS);
    let hs = vm.csr(HUSTATUS);
    assert_ne!(hs & HSTATUS_SPVP, 0, "came from VS");
    assert_ne!(hs & HSTATUS_SPV, 0);
    assert_eq!(hs & HSTATUS_GVA, 0, "no guest address in utval");
    assert_eq!(vm.x(r::A0), 42);
    // The hypervisor answers (a0 = 7) and resumes after the ecall.
    vm.hart.set_gpr(r::A0, 7);
    vm.skip();
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 43);
    assert_eq!(vm.csr(UEPC), RAM_GPA + 12);
}

/// VS code that enters VU at `user` with huedeleg[8] handled by `handler` below.
const VU_ROUNDTRIP: &str = "
    .option norvc
    la t0, handler
    csrw stvec, t0
    la t0, user
    csrw sepc, t0
    li t0, 0x100
    csrc sstatus, t0      # SPP = U
    li t0, 0x20
    csrs sstatus, t0      # SPIE = 1
    sret
user:
    li a0, 5
uecall1:
    ecall
    addi a0, a0, 1
uecall2:
    ecall
    j user
handler:
    addi s0, s0, 1
    csrr t1, scause
    csrr t2, sepc
    csrr t3, sstatus
    li t4, 2
    beq s0, t4, done
    mv s1, t1
    mv s2, t2
    mv s3, t3
    addi t2, t2, 4
    csrw sepc, t2
    sret
done:
    mv s4, t1
    mv s5, t2
    la s6, uecall1
    la s7, uecall2
    ecall
";

#[test]
fn ecall_from_vu_delegated_to_guest_and_sret_returns_to_vu() {
    let mut vm = TestVm::with_program(VU_ROUNDTRIP);
    vm.set_csr(HUEDELEG, 1 << cause::ECALL_U);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), 2, "handler ran twice");
    assert_eq!(vm.x(r::S1), cause::ECALL_U);
    assert_eq!(vm.x(r::S2), vm.x(r::S6), "sepc = the user ecall");
    let s = vm.x(r::S3);
    assert_eq!(s & SSTATUS_SPP, 0, "trapped from U");
    assert_eq!(s & SSTATUS_SIE, 0);
    assert_eq!(vm.x(r::A0), 6, "user code resumed after the first ecall");
    assert_eq!(
        vm.x(r::S4),
        cause::ECALL_U,
        "second ecall also came from VU: sret went to VU"
    );
    assert_eq!(vm.x(r::S5), vm.x(r::S7));
    assert_eq!(vm.csr(HUVSCAUSE), cause::ECALL_U);
    assert_eq!(vm.csr(HUVSEPC), vm.x(r::S7));
}

#[test]
fn ecall_from_vu_not_delegated_exits_with_cause_8() {
    let mut vm = TestVm::with_program(VU_ROUNDTRIP);
    let e = vm.run();
    let (c, tval, _, _) = TestVm::trap(e);
    assert_eq!(c, cause::ECALL_U);
    assert_eq!(tval, 0);
    assert_eq!(vm.csr(HUSTATUS) & HSTATUS_SPVP, 0, "SPVP records VU");
    assert_eq!(vm.x(r::A0), 5);
    assert_eq!(vm.x(r::S0), 0, "guest handler not involved");
    // Resuming after it continues in VU.
    vm.skip();
    let (c, _, _, _) = TestVm::trap(vm.run());
    assert_eq!(c, cause::ECALL_U);
    assert_eq!(vm.x(r::A0), 6);
}

#[test]
fn illegal_instruction_exits_when_not_delegated() {
    let mut vm = TestVm::with_program(
        "
        .option norvc
        nop
        .word 0xffffffff & 0x0000707b    # custom-3 with funct3 7: not implemented
        ecall
        ",
    );
    let e = vm.run();
    assert_eq!(
        e,
        Exit::Trap {
            cause: cause::ILLEGAL_INST,
            tval: 0x707b,
            htval: 0,
            htinst: 0
        }
    );
    assert_eq!(vm.csr(UEPC), RAM_GPA + 4);
    assert_eq!(vm.csr(UTVAL), 0x707b);
}

#[test]
fn illegal_instruction_delegated_goes_to_the_guest() {
    let mut vm = TestVm::with_program(
        "
        .option norvc
        la t0, handler
        csrw stvec, t0
        li t0, 2
        csrs sstatus, t0      # SIE = 1: must be saved to SPIE and cleared
    bad:
        mret
        li s5, 1              # skipped: the handler returns past it
    back:
        ecall
    handler:
        csrr s0, scause
        csrr s1, stval
        csrr s2, sepc
        csrr s3, sstatus
        la t0, back
        csrw sepc, t0
        sret
        ",
    );
    vm.set_csr(HUEDELEG, 1 << cause::ILLEGAL_INST);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), cause::ILLEGAL_INST);
    assert_eq!(vm.x(r::S1), 0x3020_0073, "stval = mret's encoding");
    assert_eq!(vm.x(r::S2), RAM_GPA + 0x14);
    let s = vm.x(r::S3);
    assert_ne!(s & SSTATUS_SPP, 0, "trapped from VS");
    assert_ne!(s & SSTATUS_SPIE, 0, "SPIE = old SIE");
    assert_eq!(s & SSTATUS_SIE, 0, "SIE cleared on trap entry");
    assert_eq!(vm.x(r::S5), 0);
    // sret restored SIE from SPIE.
    assert_ne!(vm.csr(HUVSSTATUS) & SSTATUS_SIE, 0);
}

#[test]
fn mret_is_illegal() {
    let mut vm = TestVm::with_program("mret\necall\n");
    assert_eq!(
        vm.run(),
        Exit::Trap {
            cause: cause::ILLEGAL_INST,
            tval: 0x3020_0073,
            htval: 0,
            htinst: 0
        }
    );
}

#[test]
fn sret_in_vu_is_a_virtual_instruction() {
    let mut vm = TestVm::with_program("sret\necall\n");
    let hs = vm.csr(HUSTATUS);
    vm.set_csr(HUSTATUS, hs & !HSTATUS_SPVP); // enter VU
    assert_eq!(
        vm.run(),
        Exit::Trap {
            cause: cause::VIRTUAL_INST,
            tval: 0x1020_0073,
            htval: 0,
            htinst: 0
        }
    );
    assert_eq!(vm.csr(HUSTATUS) & HSTATUS_SPVP, 0);
    assert_eq!(vm.csr(UEPC), RAM_GPA);
}

#[test]
fn vs_privileged_instructions_trapped_by_hustatus_bits() {
    for (bit, insn, word) in [
        (HSTATUS_VTSR, "sret", 0x1020_0073u64),
        (HSTATUS_VTW, "wfi", 0x1050_0073),
        (HSTATUS_VTVM, "sfence.vma", 0x1200_0073),
        (HSTATUS_VTVM, "csrr a0, satp", 0x1800_2573),
    ] {
        let mut vm = TestVm::with_program(&format!("{insn}\necall\n"));
        let hs = vm.csr(HUSTATUS);
        vm.set_csr(HUSTATUS, hs | bit);
        assert_eq!(
            vm.run(),
            Exit::Trap {
                cause: cause::VIRTUAL_INST,
                tval: word,
                htval: 0,
                htinst: 0
            },
            "{insn}"
        );
    }
}

#[test]
fn csr_privilege_checks_from_vs_and_vu() {
    // (instruction, enter VU?, cause)
    let cases: &[(&str, bool, u64)] = &[
        ("csrr a0, 0x600", false, cause::VIRTUAL_INST), // hstatus
        ("csrw 0x600, a0", false, cause::VIRTUAL_INST),
        ("csrr a0, 0x680", false, cause::VIRTUAL_INST), // hgatp
        ("csrr a0, 0x200", false, cause::VIRTUAL_INST), // vsstatus
        ("csrr a0, 0x800", false, cause::VIRTUAL_INST), // hustatus
        ("csrr a0, 0x880", false, cause::VIRTUAL_INST), // hugatp
        ("csrr a0, 0x300", false, cause::ILLEGAL_INST), // mstatus
        ("csrr a0, 0xf14", false, cause::ILLEGAL_INST), // mhartid
        ("csrr a0, 0x5c0", false, cause::ILLEGAL_INST), // no such S CSR
        ("csrw cycle, a0", false, cause::ILLEGAL_INST), // read-only
        ("csrr a0, sstatus", true, cause::VIRTUAL_INST),
        ("csrw sscratch, a0", true, cause::VIRTUAL_INST),
        ("csrr a0, 0x600", true, cause::VIRTUAL_INST),
        ("csrr a0, 0x300", true, cause::ILLEGAL_INST),
    ];
    for (insn, vu, want) in cases {
        let mut vm = TestVm::with_program(&format!(".option norvc\n{insn}\necall\n"));
        vm.set_csr(HUCOUNTEREN, 7);
        if *vu {
            let hs = vm.csr(HUSTATUS);
            vm.set_csr(HUSTATUS, hs & !HSTATUS_SPVP);
        }
        let word = vm.read_u32(RAM_GPA) as u64;
        assert_eq!(
            vm.run(),
            Exit::Trap {
                cause: *want,
                tval: word,
                htval: 0,
                htinst: 0
            },
            "{insn} (VU: {vu})"
        );
    }
}

#[test]
fn supervisor_csrs_reach_the_vs_copies() {
    let mut vm = TestVm::with_program(
        "
        li t0, 0x1234
        csrrw s0, sscratch, t0      # s0 = old sscratch (set by the host)
        csrrsi s1, sscratch, 3      # s1 = 0x1234
        csrrci s2, sscratch, 1      # s2 = 0x1237
        csrr s3, sscratch           # 0x1236
        li t0, 0x80000103
        csrw stvec, t0              # mode 3 reserved: keeps mode 0 (WARL)
        csrr s4, stvec
        li t0, 0x80000101
        csrw stvec, t0
        csrr s5, stvec
        li t0, -1
        csrw sstatus, t0
        csrr s6, sstatus
        csrw sepc, t0
        csrr s7, sepc
        csrr s8, satp
        ecall
        ",
    );
    vm.set_csr(HUVSSCRATCH, 0xabcd);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), 0xabcd);
    assert_eq!(vm.x(r::S1), 0x1234);
    assert_eq!(vm.x(r::S2), 0x1237);
    assert_eq!(vm.x(r::S3), 0x1236);
    assert_eq!(vm.csr(HUVSSCRATCH), 0x1236);
    assert_eq!(vm.x(r::S4) & 3, 0, "reserved vector mode not taken");
    assert_eq!(vm.x(r::S5), 0x8000_0101);
    assert_eq!(vm.csr(HUVSTVEC), 0x8000_0101);
    let s = vm.x(r::S6);
    assert_eq!((s >> 32) & 3, 2, "UXL reads 64-bit");
    assert_eq!(
        s & (SSTATUS_SIE | SSTATUS_SPIE | SSTATUS_SPP | SSTATUS_SUM | SSTATUS_MXR),
        SSTATUS_SIE | SSTATUS_SPIE | SSTATUS_SPP | SSTATUS_SUM | SSTATUS_MXR
    );
    assert_eq!(s & SSTATUS_FS, SSTATUS_FS);
    assert_ne!(s & SSTATUS_SD, 0);
    assert_eq!(vm.x(r::S7), u64::MAX - 1, "sepc bit 0 is zero");
    assert_eq!(vm.x(r::S8), 0);
}

// ------------------------------------------------------------------------------ interrupts

/// Guest set-up for a delegated interrupt: handler records scause/sepc/sip in s0/s1/s2 and
/// exits with an ecall. `ENABLE` (an sie mask) is substituted per test.
const IRQ_GUEST: &str = "
    .option norvc
    la t0, handler
    csrw stvec, t0
    li t0, ENABLE
    csrs sie, t0
    csrsi sstatus, 2
after_enable:
    li s3, 1
    j after_enable
handler:
    csrr s0, scause
    csrr s1, sepc
    csrr s2, sip
    la s4, after_enable
    ecall
";

#[test]
fn delegated_software_interrupt_traps_to_the_guest() {
    let mut vm = TestVm::with_program(&IRQ_GUEST.replace("ENABLE", "2"));
    vm.set_csr(HUIDELEG, MIP_VSSIP);
    vm.set_csr(HUVIP, MIP_VSSIP);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), cause::INTERRUPT | IRQ_S_SOFT);
    assert_eq!(
        vm.x(r::S1),
        vm.x(r::S4),
        "taken right after sstatus.SIE was set"
    );
    assert_eq!(vm.x(r::S2), 1 << IRQ_S_SOFT, "sip.SSIP");
    assert_eq!(vm.x(r::S3), 0);
    assert_eq!(vm.csr(HUVSIP), 1 << IRQ_S_SOFT);
    assert_eq!(vm.csr(HUVSIE), 1 << IRQ_S_SOFT);
    let s = vm.csr(HUVSSTATUS);
    assert_eq!(s & SSTATUS_SIE, 0);
    assert_ne!(s & SSTATUS_SPIE, 0);
}

#[test]
fn guest_clears_its_software_interrupt_through_sip() {
    let mut vm = TestVm::with_program(
        "
        csrsi sip, 2
        csrr s0, sip
        csrci sip, 2
        csrr s1, sip
        ecall
        ",
    );
    vm.set_csr(HUIDELEG, MIP_VSSIP);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), 2);
    assert_eq!(vm.x(r::S1), 0);
    assert_eq!(vm.csr(HUVIP), 0);
}

#[test]
fn interrupt_not_taken_while_disabled_or_not_delegated_to_sie() {
    // Delegated and pending, but sstatus.SIE stays 0: no trap.
    let mut vm = TestVm::with_program(
        "
        li t0, 2
        csrs sie, t0
        li a0, 0
        li t1, 1000
    1:  addi a0, a0, 1
        bne a0, t1, 1b
        csrr s0, sip
        ecall
        ",
    );
    vm.set_csr(HUIDELEG, MIP_VSSIP);
    vm.set_csr(HUVIP, MIP_VSSIP);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 1000);
    assert_eq!(vm.x(r::S0), 2);
    assert_eq!(vm.csr(HUVSCAUSE), 0);
}

#[test]
fn vstimecmp_in_the_past_fires_a_timer_interrupt() {
    let mut vm = TestVm::with_program(
        &IRQ_GUEST
            .replace(
                "csrsi sstatus, 2",
                "csrw stimecmp, zero\n    csrsi sstatus, 2",
            )
            .replace("ENABLE", "0x20"),
    );
    vm.set_csr(HUIDELEG, MIP_VSTIP);
    vm.set_csr(HUCOUNTEREN, 7);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), cause::INTERRUPT | IRQ_S_TIMER);
    assert_eq!(vm.x(r::S2), 1 << IRQ_S_TIMER, "sip.STIP");
    assert_eq!(vm.csr(HUVSTIMECMP), 0);
    assert_ne!(vm.csr(HUIP) & MIP_VSTIP, 0);
    // Moving the comparator into the future clears the pending bit.
    vm.set_csr(HUVSTIMECMP, u64::MAX);
    assert_eq!(vm.csr(HUIP) & MIP_VSTIP, 0);
}

#[test]
fn future_timer_wakes_wfi_at_its_deadline() {
    let mut vm = TestVm::with_program(
        "
        .option norvc
        la t0, handler
        csrw stvec, t0
        li t0, 0x20
        csrs sie, t0
        rdtime s5
        li t0, 200000         # 20 ms at 10 MHz
        add s6, s5, t0
        csrw stimecmp, s6
        csrsi sstatus, 2
    1:  wfi
        j 1b
    handler:
        rdtime s7
        csrr s0, scause
        li t0, -1
        csrw stimecmp, t0     # acknowledge
        csrr s1, sip
        ecall
        ",
    );
    vm.set_csr(HUIDELEG, MIP_VSTIP);
    vm.set_csr(HUCOUNTEREN, 7);
    let t0 = std::time::Instant::now();
    vm.run_to_ecall();
    let waited = t0.elapsed();
    assert_eq!(vm.x(r::S0), cause::INTERRUPT | IRQ_S_TIMER);
    assert!(vm.x(r::S7) >= vm.x(r::S6), "woke before the deadline");
    assert_eq!(vm.x(r::S1), 0, "STIP cleared by the comparator write");
    assert!(waited >= std::time::Duration::from_millis(19), "{waited:?}");
    assert!(waited < std::time::Duration::from_secs(5), "{waited:?}");
}

#[test]
fn stimecmp_needs_stce_and_hucounteren_tm() {
    for (envcfg, counteren) in [(0, 7), (ENVCFG_STCE, 0b101)] {
        let mut vm = TestVm::with_program(".option norvc\ncsrw stimecmp, zero\necall\n");
        vm.set_csr(HUENVCFG, envcfg);
        vm.set_csr(HUCOUNTEREN, counteren);
        assert_eq!(
            vm.run(),
            Exit::Trap {
                cause: cause::VIRTUAL_INST,
                tval: vm.read_u32(RAM_GPA) as u64,
                htval: 0,
                htinst: 0
            },
            "henvcfg {envcfg:#x} hucounteren {counteren:#b}"
        );
        assert_eq!(vm.csr(HUVSTIMECMP), u64::MAX, "not written");
    }
}

#[test]
fn undelegated_interrupt_exits_regardless_of_guest_sie() {
    let mut vm = TestVm::with_program(
        "
        .option norvc
        li a0, 0
    1:  addi a0, a0, 1
        j 1b
        ",
    );
    // Pending but not enabled in huie: no exit (the watchdog kick would fail the test, so
    // use a kick of our own to stop the guest).
    vm.set_csr(HUVIP, MIP_VSSIP);
    let intr = vm.intr.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        intr.kick(0).unwrap();
    });
    assert_eq!(vm.run(), Exit::Kicked);
    t.join().unwrap();
    assert!(vm.x(r::A0) > 0);
    // Enabled in huie, not delegated: exits with the VS-level cause (2), guest SIE clear.
    vm.set_csr(HUIE, MIP_VSSIP);
    let pc = vm.csr(UEPC);
    let e = vm.run();
    assert_eq!(
        e,
        Exit::Trap {
            cause: cause::INTERRUPT | IRQ_VS_SOFT,
            tval: 0,
            htval: 0,
            htinst: 0
        }
    );
    assert_eq!(
        vm.csr(UEPC),
        pc,
        "no instruction ran: the interrupt was already pending"
    );
    assert_eq!(vm.csr(HUVSCAUSE), 0, "guest not involved");
    // Clearing huvip lets it run on.
    vm.set_csr(HUVIP, 0);
    let intr = vm.intr.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        intr.kick(0).unwrap();
    });
    assert_eq!(vm.run(), Exit::Kicked);
    t.join().unwrap();
}

#[test]
fn external_beats_software_beats_timer() {
    let mut vm = TestVm::with_program(
        &IRQ_GUEST
            .replace(
                "csrsi sstatus, 2",
                "csrw stimecmp, zero\n    csrsi sstatus, 2",
            )
            .replace("ENABLE", "0x222"),
    );
    vm.set_csr(HUIDELEG, VS_IRQS);
    vm.set_csr(HUCOUNTEREN, 7);
    vm.set_csr(HUVIP, MIP_VSSIP | MIP_VSEIP);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), cause::INTERRUPT | IRQ_S_EXT);
    assert_eq!(
        vm.x(r::S2),
        (1 << IRQ_S_EXT) | (1 << IRQ_S_SOFT) | (1 << IRQ_S_TIMER)
    );
    // Without the external one, software is next.
    let mut vm = TestVm::with_program(
        &IRQ_GUEST
            .replace(
                "csrsi sstatus, 2",
                "csrw stimecmp, zero\n    csrsi sstatus, 2",
            )
            .replace("ENABLE", "0x222"),
    );
    vm.set_csr(HUIDELEG, VS_IRQS);
    vm.set_csr(HUCOUNTEREN, 7);
    vm.set_csr(HUVIP, MIP_VSSIP);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), cause::INTERRUPT | IRQ_S_SOFT);
}

#[test]
fn vectored_stvec_dispatches_interrupts() {
    let mut vm = TestVm::with_program(
        "
        .option norvc
        la t0, vec
        ori t0, t0, 1
        csrw stvec, t0
        li t0, 0x200
        csrs sie, t0
        csrsi sstatus, 2
    1:  j 1b
        .balign 64
    vec:
        j bad         # 0: exceptions
        j bad         # 1: SSI
        j bad
        j bad
        j bad
        j bad         # 5: STI
        j bad
        j bad
        j bad
        j ext         # 9: SEI
    bad:
        li s0, 0xbad
        ecall
    ext:
        csrr s0, scause
        ecall
        ",
    );
    vm.set_csr(HUIDELEG, MIP_VSEIP);
    vm.set_csr(HUVIP, MIP_VSEIP);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), cause::INTERRUPT | IRQ_S_EXT);
}

#[test]
fn wfi_returns_when_an_enabled_interrupt_is_pending() {
    // SIE is 0, so the interrupt is not taken, but WFI still resumes.
    let mut vm = TestVm::with_program(
        "
        li t0, 2
        csrs sie, t0
        wfi
        li a0, 1
        ecall
        ",
    );
    vm.set_csr(HUIDELEG, MIP_VSSIP);
    vm.set_csr(HUVIP, MIP_VSSIP);
    let t0 = std::time::Instant::now();
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 1);
    assert!(t0.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(vm.csr(HUVSCAUSE), 0, "not taken");
}

#[test]
fn wfi_in_vu_is_a_virtual_instruction() {
    let mut vm = TestVm::with_program("wfi\necall\n");
    let hs = vm.csr(HUSTATUS);
    vm.set_csr(HUSTATUS, hs & !HSTATUS_SPVP);
    assert_eq!(
        vm.run(),
        Exit::Trap {
            cause: cause::VIRTUAL_INST,
            tval: 0x1050_0073,
            htval: 0,
            htinst: 0
        }
    );
}

#[test]
fn hypervisor_instructions_from_vs_are_virtual_instructions() {
    // hfence.gvma and hlv.w from VS-mode.
    for word in [0x6200_0073u64, 0x6805_c573] {
        let mut vm = TestVm::with_program(&format!(".word {word:#x}\necall\n"));
        assert_eq!(
            vm.run(),
            Exit::Trap {
                cause: cause::VIRTUAL_INST,
                tval: word,
                htval: 0,
                htinst: 0
            },
            "{word:#x}"
        );
    }
}

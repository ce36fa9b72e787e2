//! The physical memory checker: a G-stage table that points outside the VM's grants halts the
//! VM and raises an emergency, and the forbidden memory is neither read nor written.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use dvext::csr::*;
use dvext::{Emergency, Exit, GuestAccessFault, HaltReason};

const PATTERN: u8 = 0xa5;
/// Guest-physical window mapped to forbidden memory.
const BAD_GPA: u64 = 0xc000_0000;

fn emergencies(vm: &TestVm) -> Arc<Mutex<Vec<Emergency>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    vm.hv
        .set_emergency_handler(move |e| l.lock().unwrap().push(e.clone()));
    log
}

fn fill_forbidden(vm: &TestVm, hpa: u64) {
    assert!(
        !vm.hv.pmc_check(VMID, hpa, 1),
        "test set-up: {hpa:#x} must be outside the grant"
    );
    assert!(vm.hv.phys_mem().write(hpa, &[PATTERN; 4096]));
}

fn forbidden_unchanged(vm: &TestVm, hpa: u64) {
    let mut b = [0u8; 4096];
    assert!(vm.hv.phys_mem().read(hpa, &mut b));
    assert!(
        b.iter().all(|&x| x == PATTERN),
        "forbidden memory was modified"
    );
}

fn pmc_vm(program: &str) -> (TestVm, Arc<Mutex<Vec<Emergency>>>) {
    let mut vm = TestVm::new();
    vm.g_map(BAD_GPA, FORBIDDEN_HPA, 0, G_RWX);
    fill_forbidden(&vm, FORBIDDEN_HPA);
    vm.load_program(program);
    let log = emergencies(&vm);
    (vm, log)
}

#[test]
fn load_from_outside_the_grant_halts_without_reading() {
    let (mut vm, log) = pmc_vm(
        "
        li a0, 0x1111
        li t0, 0xc0000008
        ld a0, 0(t0)
        lbu a1, 1(t0)
        ecall
        ",
    );
    let e = vm.run();
    assert_eq!(
        e,
        Exit::Halted(HaltReason::PmcViolation {
            hpa: FORBIDDEN_HPA,
            va: BAD_GPA + 8
        })
    );
    assert_eq!(
        *log.lock().unwrap(),
        [Emergency::PmcViolation {
            vmid: VMID,
            vcpu: 0,
            hpa: FORBIDDEN_HPA,
            va: BAD_GPA + 8
        }]
    );
    assert_eq!(vm.x(r::A0), 0x1111, "nothing was loaded");
    assert_eq!(vm.x(r::A1), 0);
    for reg in 1..32 {
        assert_ne!(
            vm.x(reg),
            0xa5a5_a5a5_a5a5_a5a5,
            "x{reg} holds forbidden data"
        );
    }
    forbidden_unchanged(&vm, FORBIDDEN_HPA);
    assert_eq!(
        vm.hv.halt_reason(VMID),
        Some(HaltReason::PmcViolation {
            hpa: FORBIDDEN_HPA,
            va: BAD_GPA + 8
        })
    );
    // The VM stays halted.
    assert!(matches!(
        vm.run(),
        Exit::Halted(HaltReason::PmcViolation { .. })
    ));
    assert_eq!(log.lock().unwrap().len(), 1, "reported once");
}

#[test]
fn store_and_amo_outside_the_grant_write_nothing() {
    for insn in [
        "sd t1, 16(t0)",
        "sb t1, 0(t0)",
        "amoadd.d a0, t1, (t0)",
        "sc.w a0, t1, (t0)",
        "fsd ft0, 0(t0)",
    ] {
        let (mut vm, log) = pmc_vm(&format!(
            "
            li t0, 0xc0000000
            li t1, 0x1234567812345678
            li a0, 0x77
            fmv.d.x ft0, t1
            {insn}
            ecall
            "
        ));
        let e = vm.run();
        assert!(
            matches!(e, Exit::Halted(HaltReason::PmcViolation { hpa, .. }) if hpa == FORBIDDEN_HPA),
            "{insn}: {e:?}"
        );
        assert_eq!(log.lock().unwrap().len(), 1, "{insn}");
        assert_eq!(vm.x(r::A0), 0x77, "{insn}");
        forbidden_unchanged(&vm, FORBIDDEN_HPA);
    }
}

#[test]
fn fetch_from_outside_the_grant_halts() {
    let (mut vm, log) = pmc_vm("li t0, 0xc0000000\njr t0\n");
    // Forbidden memory holding valid code must not run.
    let code = assemble("li a0, 0x5a5\necall\n");
    assert!(vm.hv.phys_mem().write(FORBIDDEN_HPA, &code));
    let e = vm.run();
    assert_eq!(
        e,
        Exit::Halted(HaltReason::PmcViolation {
            hpa: FORBIDDEN_HPA,
            va: BAD_GPA
        })
    );
    assert_eq!(log.lock().unwrap().len(), 1);
    assert_eq!(vm.csr(UEPC), BAD_GPA);
    assert_eq!(vm.x(r::A0), 0);
}

#[test]
fn gstage_table_outside_the_grant_is_caught_on_the_walk() {
    let mut vm = TestVm::new();
    // A non-leaf G-stage PTE pointing at a "table" in forbidden memory.
    let table = FORBIDDEN_HPA + 0x1000;
    fill_forbidden(&vm, table);
    // Root index of 0xc000_0000 is 3.
    vm.hv
        .phys_mem()
        .store_u64(vm.g_root + 3 * 8, ((table >> 12) << 10) | PTE_V);
    vm.load_program("li t0, 0xc0000000\nli a0, 3\nld a0, 0(t0)\necall\n");
    let log = emergencies(&vm);
    let e = vm.run();
    assert!(
        matches!(e, Exit::Halted(HaltReason::PmcViolation { hpa, va: BAD_GPA }) if hpa >> 12 == table >> 12),
        "{e:?}"
    );
    assert_eq!(log.lock().unwrap().len(), 1);
    assert_eq!(vm.x(r::A0), 3);
    forbidden_unchanged(&vm, table);
}

#[test]
fn hugatp_root_outside_the_grant_halts_on_the_first_fetch() {
    let mut vm = TestVm::with_program("li a0, 1\necall\n");
    fill_forbidden(&vm, FORBIDDEN_HPA);
    let log = emergencies(&vm);
    vm.set_csr(HUGATP, (HGATP_MODE_SV39X4 << 60) | (FORBIDDEN_HPA >> 12));
    let e = vm.run();
    assert!(
        matches!(
            e,
            Exit::Halted(HaltReason::PmcViolation { va: RAM_GPA, .. })
        ),
        "{e:?}"
    );
    assert_eq!(log.lock().unwrap().len(), 1);
    assert_eq!(vm.x(r::A0), 0);
    forbidden_unchanged(&vm, FORBIDDEN_HPA);
}

#[test]
fn access_straddling_the_end_of_a_grant() {
    // Two adjacent 4 KiB G-stage pages: the last granted page of RAM and the first page after
    // the grant. A misaligned load across them must not return the granted half either.
    let mut vm = TestVm::new();
    let last = RAM_HPA + RAM_SIZE - 0x1000;
    let after = RAM_HPA + RAM_SIZE;
    vm.g_map(BAD_GPA, last, 0, G_RWX);
    vm.g_map(BAD_GPA + 0x1000, after, 0, G_RWX);
    fill_forbidden(&vm, after);
    vm.write_u64(RAM_GPA + RAM_SIZE - 8, 0x1122_3344_5566_7788);
    vm.load_program(
        "
        li t0, 0xc0000ff8
        ld s0, 0(t0)          # fine: granted page
        li a0, 0x66
        lw a0, 6(t0)          # crosses into the forbidden page
        ecall
        ",
    );
    let log = emergencies(&vm);
    let e = vm.run();
    assert_eq!(
        e,
        Exit::Halted(HaltReason::PmcViolation {
            hpa: after,
            va: BAD_GPA + 0x1000
        })
    );
    assert_eq!(vm.x(r::S0), 0x1122_3344_5566_7788);
    assert_eq!(vm.x(r::A0), 0x66);
    assert_eq!(log.lock().unwrap().len(), 1);
    forbidden_unchanged(&vm, after);
}

#[test]
fn violation_halts_every_vcpu_of_the_vm() {
    let (mut vm, log) = pmc_vm("li t0, 0xc0000000\nld a0, 0(t0)\necall\n");
    // vCPU 1 spins; it must come back with the same halt reason.
    let mut h1 = vm.add_hart(1);
    let spin = assemble("1: addi a1, a1, 1\nj 1b\n");
    vm.write(RAM_GPA + 0x10000, &spin);
    h1.csr_write(UEPC, RAM_GPA + 0x10000).unwrap();
    let intr = vm.intr.clone();
    let other = std::thread::spawn(move || {
        let e = run_with_watchdog(&mut h1, &intr, std::time::Duration::from_secs(30));
        (e, h1.gpr(r::A1))
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    let e0 = vm.run();
    let (e1, spun) = other.join().unwrap();
    let reason = HaltReason::PmcViolation {
        hpa: FORBIDDEN_HPA,
        va: BAD_GPA,
    };
    assert_eq!(e0, Exit::Halted(reason));
    assert_eq!(e1, Exit::Halted(reason));
    assert!(spun > 0);
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[test]
fn hlv_outside_the_grant_is_an_access_fault_not_a_read() {
    let mut vm = TestVm::new();
    vm.g_map(BAD_GPA, FORBIDDEN_HPA, 0, G_RWX);
    fill_forbidden(&vm, FORBIDDEN_HPA);
    assert_eq!(
        vm.hart.hlv(BAD_GPA, 8),
        Err(GuestAccessFault {
            cause: cause::LOAD_ACCESS,
            tval: BAD_GPA,
            gpa: 0
        })
    );
    assert_eq!(
        vm.hart.hsv(BAD_GPA, 8, 0),
        Err(GuestAccessFault {
            cause: cause::STORE_ACCESS,
            tval: BAD_GPA,
            gpa: 0
        })
    );
    forbidden_unchanged(&vm, FORBIDDEN_HPA);
    // Reported, and the VM halted: its G-stage table points outside its grants.
    assert!(matches!(
        vm.run(),
        Exit::Halted(HaltReason::PmcViolation { .. })
    ));
}

#[test]
fn other_vms_grants_do_not_count() {
    // Memory granted to VM 2 is still forbidden to VM 1.
    let (mut vm, log) = pmc_vm("li t0, 0xc0000000\nld a0, 0(t0)\necall\n");
    vm.hv.pmc_grant(2, FORBIDDEN_HPA, 0x1000);
    assert!(matches!(
        vm.run(),
        Exit::Halted(HaltReason::PmcViolation { .. })
    ));
    assert_eq!(log.lock().unwrap().len(), 1);
    // Granting it to VM 1 would allow it: the checker is what stops it.
    let (mut vm, _log) = pmc_vm("li t0, 0xc0000000\nld a0, 0(t0)\necall\n");
    vm.hv.pmc_grant(VMID, FORBIDDEN_HPA, 0x1000);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 0xa5a5_a5a5_a5a5_a5a5);
}

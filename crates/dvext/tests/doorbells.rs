//! User-level interrupt doorbells and cross-thread requests: vIPI (VSSIP), vEXT (VSEIP level),
//! kick, remote fences, and what happens when a doorbell names a vCPU that does not exist.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use dvext::csr::*;
use dvext::{DoorbellError, Emergency, Exit, Interrupter, RemoteFence};

/// Guest: enable the interrupts in `ENABLE` (sie mask), SIE=1, then sleep in WFI forever.
/// The handler counts interrupts in s1, records scause in s0 and exits with an ecall;
/// resuming after that ecall returns (sret) to the WFI loop.
const SLEEPER: &str = "
    .option norvc
    la t0, handler
    csrw stvec, t0
    li t0, ENABLE
    csrs sie, t0
    csrsi sstatus, 2
idle:
    wfi
    addi s2, s2, 1          # wake-ups
    j idle
handler:
    addi s1, s1, 1
    csrr s0, scause
    ecall
    sret
";

fn sleeper(enable: u64) -> TestVm {
    let mut vm = TestVm::with_program(&SLEEPER.replace("ENABLE", &enable.to_string()));
    vm.set_csr(HUIDELEG, VS_IRQS);
    vm
}

fn after(ms: u64, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(ms));
        f()
    })
}

#[test]
fn send_ipi_wakes_a_guest_in_wfi() {
    let mut vm = sleeper(1 << IRQ_S_SOFT);
    let intr = vm.intr.clone();
    let start = Instant::now();
    let t = after(50, move || intr.send_ipi(0).unwrap());
    vm.run_to_ecall();
    t.join().unwrap();
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(vm.x(r::S0), cause::INTERRUPT | IRQ_S_SOFT);
    assert_eq!(vm.x(r::S1), 1);
    assert_eq!(vm.csr(HUVIP), MIP_VSSIP, "the doorbell set VSSIP");
    assert_eq!(vm.csr(HUVSIP), 1 << IRQ_S_SOFT);
}

#[test]
fn send_ipi_to_a_running_guest_is_seen_promptly() {
    let mut vm = TestVm::with_program(
        "
        .option norvc
        la t0, handler
        csrw stvec, t0
        csrsi sie, 2
        csrsi sstatus, 2
    1:  addi a0, a0, 1
        j 1b
    handler:
        csrr s0, scause
        ecall
        ",
    );
    vm.set_csr(HUIDELEG, MIP_VSSIP);
    let intr = vm.intr.clone();
    let t = after(30, move || intr.send_ipi(0).unwrap());
    vm.run_to_ecall();
    t.join().unwrap();
    assert_eq!(vm.x(r::S0), cause::INTERRUPT | IRQ_S_SOFT);
    assert!(vm.x(r::A0) > 1000, "the guest was running");
}

#[test]
fn set_external_is_level_sensitive() {
    let mut vm = sleeper(1 << IRQ_S_EXT);
    // Raised before the guest runs: taken as soon as the guest enables it.
    vm.intr.set_external(0, true).unwrap();
    assert_eq!(vm.csr(HUVIP), MIP_VSEIP);
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), cause::INTERRUPT | IRQ_S_EXT);
    assert_eq!(vm.x(r::S1), 1);
    // The "PLIC" lowers the line while the guest handles it (a claim); the guest returns to
    // WFI and is not interrupted again.
    vm.intr.set_external(0, false).unwrap();
    assert_eq!(vm.csr(HUVIP) & MIP_VSEIP, 0);
    assert_eq!(vm.csr(HUVSIP) & (1 << IRQ_S_EXT), 0);
    vm.skip();
    let intr = vm.intr.clone();
    let t = after(50, move || intr.kick(0).unwrap());
    assert_eq!(vm.run(), Exit::Kicked);
    t.join().unwrap();
    assert_eq!(vm.x(r::S1), 1, "no second interrupt with the line low");
    // Raised from another thread while the guest sleeps: it wakes and takes it.
    let intr = vm.intr.clone();
    let t = after(30, move || intr.set_external(0, true).unwrap());
    vm.run_to_ecall();
    t.join().unwrap();
    assert_eq!(vm.x(r::S1), 2);
    assert_eq!(vm.x(r::S0), cause::INTERRUPT | IRQ_S_EXT);
    // While the line stays high, every sret re-enters the handler.
    vm.skip();
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S1), 3);
    vm.intr.set_external(0, false).unwrap();
    // Lowering an already low line, and raising a raised one, are idempotent.
    vm.intr.set_external(0, false).unwrap();
    assert_eq!(vm.csr(HUVIP), 0);
}

#[test]
fn doorbell_for_a_missing_vcpu_fails_and_reports_an_emergency() {
    let vm = TestVm::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    vm.hv
        .set_emergency_handler(move |e| l.lock().unwrap().push(e.clone()));
    let err = || {
        Err(DoorbellError::NoSuchVcpu {
            vmid: VMID,
            target: 7,
        })
    };
    assert_eq!(vm.intr.send_ipi(7), err());
    assert_eq!(vm.intr.set_external(7, true), err());
    assert_eq!(vm.intr.kick(7), err());
    assert_eq!(vm.intr.remote_fence(7, RemoteFence::Gvma), err());
    let bad = Emergency::BadDoorbell {
        vmid: VMID,
        target: 7,
    };
    assert_eq!(
        *log.lock().unwrap(),
        vec![bad.clone(), bad.clone(), bad.clone(), bad]
    );
    // Another VM's port cannot reach this VM's vCPU 0.
    let other = vm.hv.interrupter(2);
    assert_eq!(
        other.send_ipi(0),
        Err(DoorbellError::NoSuchVcpu { vmid: 2, target: 0 })
    );
    assert_eq!(
        log.lock().unwrap().last(),
        Some(&Emergency::BadDoorbell { vmid: 2, target: 0 })
    );
    let mut vm = vm;
    assert_eq!(vm.csr(HUVIP), 0, "vCPU 0 of VM 1 untouched");
    assert_eq!(vm.hv.halt_reason(VMID), None);
    // A removed vCPU is no longer reachable.
    vm.hv.remove_hart(VMID, 0);
    assert!(vm.intr.send_ipi(0).is_err());
}

#[test]
fn kick_returns_from_a_spinning_guest_and_resumes_where_it_was() {
    let mut vm = TestVm::with_program(
        "
        .option norvc
    1:  addi a0, a0, 1
        j 1b
        ",
    );
    for round in 1..=3u64 {
        let intr = vm.intr.clone();
        let t = after(20, move || intr.kick(0).unwrap());
        assert_eq!(vm.run(), Exit::Kicked, "round {round}");
        t.join().unwrap();
        let pc = vm.csr(UEPC);
        assert!(
            pc == RAM_GPA || pc == RAM_GPA + 4,
            "uepc {pc:#x} inside the loop"
        );
        assert_ne!(vm.csr(HUSTATUS) & HSTATUS_SPVP, 0, "still VS");
    }
    let n = vm.x(r::A0);
    assert!(n > 0);
    // A kick rung while the vCPU is outside the guest is delivered at the next entry.
    vm.intr.kick(0).unwrap();
    assert_eq!(vm.run(), Exit::Kicked);
    // ...and only once.
    let intr = vm.intr.clone();
    let t = after(20, move || intr.kick(0).unwrap());
    assert_eq!(vm.run(), Exit::Kicked);
    t.join().unwrap();
    assert!(vm.x(r::A0) > n);
}

#[test]
fn kick_wakes_a_guest_in_wfi() {
    let mut vm = sleeper(0);
    let intr = vm.intr.clone();
    let t = after(30, move || intr.kick(0).unwrap());
    assert_eq!(vm.run(), Exit::Kicked);
    t.join().unwrap();
}

/// Run `vm`'s vCPU on another thread; once it has had time to cache its translations
/// (and, for a sleeper, to reach WFI), store the page-table entry `value` at host-physical
/// `pte` and call `then` with the VM's doorbells. The vCPU must then reach its ecall.
fn remap_while_running(vm: &mut TestVm, pte: u64, value: u64, then: impl FnOnce(&Interrupter)) {
    vm.timeout = Duration::from_secs(10);
    let TestVm {
        hart,
        intr,
        hv,
        timeout,
        ..
    } = vm;
    let mem = hv.phys_mem().clone();
    std::thread::scope(|s| {
        let runner = s.spawn(|| run_with_watchdog(hart, intr, *timeout));
        std::thread::sleep(Duration::from_millis(50));
        mem.store_u64(pte, value);
        then(intr);
        let e = runner.join().unwrap();
        assert!(matches!(e, Exit::Trap { cause: 10, .. }), "{e:?}");
    });
}

#[test]
fn remote_fence_returns_for_idle_and_running_vcpus() {
    let vm = TestVm::new();
    for kind in [RemoteFence::Vvma, RemoteFence::Gvma, RemoteFence::FenceI] {
        vm.intr.remote_fence(0, kind).unwrap();
    }
    drop(vm);

    // A running vCPU loads from a G-stage page until it sees a new value; the hypervisor
    // remaps the page in another thread and shoots down the vCPU's translations.
    let mut vm = TestVm::new();
    let (a, b) = (0x8080_0000u64, 0x8080_1000u64);
    let pte = vm.g_map(0xc000_0000, TestVm::hpa(a), 0, G_RWX);
    vm.write_u64(a, 1);
    vm.write_u64(b, 2);
    vm.load_program(
        "
        li t0, 0xc0000000
    1:  ld a0, 0(t0)
        li t1, 1
        beq a0, t1, 1b
        ecall
        ",
    );
    // The vCPU may keep using its cached translation until the shootdown (if the fences did
    // nothing the guest would spin until the watchdog fails the test).
    remap_while_running(
        &mut vm,
        pte,
        ((TestVm::hpa(b) >> 12) << 10) | G_RWX,
        |intr| {
            for kind in [RemoteFence::FenceI, RemoteFence::Vvma, RemoteFence::Gvma] {
                intr.remote_fence(0, kind).unwrap();
            }
        },
    );
    assert_eq!(vm.x(r::A0), 2);
}

/// A vCPU asleep in WFI is not waited for (see `wait_for_interrupt`), but the fence still
/// holds: the first access after it wakes uses the new translation, not one it cached before
/// it slept.
#[test]
fn remote_fence_to_a_vcpu_in_wfi_is_applied_before_it_runs_again() {
    let mut vm = TestVm::new();
    let (a, b) = (0x8080_0000u64, 0x8080_1000u64);
    let pte = vm.g_map(0xc000_0000, TestVm::hpa(a), 0, G_RWX);
    vm.write_u64(a, 1);
    vm.write_u64(b, 2);
    vm.load_program(&format!(
        "
        .option norvc
        la t0, handler
        csrw stvec, t0
        li t0, {ssip}
        csrs sie, t0
        li t0, 0xc0000000
        ld a0, 0(t0)
        csrsi sstatus, 2
    1:  wfi
        j 1b
    handler:
        ld a1, 0(t0)
        ecall
        ",
        ssip = 1 << IRQ_S_SOFT
    ));
    vm.set_csr(HUIDELEG, VS_IRQS);
    remap_while_running(
        &mut vm,
        pte,
        ((TestVm::hpa(b) >> 12) << 10) | G_RWX,
        |intr| {
            intr.remote_fence(0, RemoteFence::Gvma).unwrap();
            intr.send_ipi(0).unwrap();
        },
    );
    assert_eq!(vm.x(r::A0), 1, "before the remap");
    assert_eq!(vm.x(r::A1), 2, "the woken vCPU used a stale translation");
}

#[test]
fn remote_vvma_fence_makes_a_vs_pte_change_visible() {
    let mut vm = TestVm::new();
    let mut pt = VsPt::with_identity(3, &vm);
    let leaf = pt.map(&vm, 0x4000_0000, 0x8080_0000, 0, VS_RWX);
    vm.set_csr(HUVSATP, pt.satp());
    vm.write_u64(0x8080_0000, 1);
    vm.write_u64(0x8080_1000, 2);
    vm.load_program(
        "
        li t0, 0x40000000
    1:  ld a0, 0(t0)
        li t1, 1
        beq a0, t1, 1b
        ecall
        ",
    );
    let leaf_hpa = TestVm::hpa(leaf);
    remap_while_running(
        &mut vm,
        leaf_hpa,
        ((0x8080_1000u64 >> 12) << 10) | VS_RWX,
        |intr| {
            intr.remote_fence(0, RemoteFence::Vvma).unwrap();
        },
    );
    assert_eq!(vm.x(r::A0), 2);
}

#[test]
fn undelegated_external_interrupt_wakes_wfi_and_exits() {
    // The DuVisor pattern: VSEIP enabled in huie but not delegated; the guest sleeps in WFI
    // with its own interrupts disabled; the I/O thread's doorbell wakes it and the vCPU exits.
    let mut vm = TestVm::with_program(
        "
        .option norvc
    1:  wfi
        j 1b
        ",
    );
    vm.set_csr(HUIE, MIP_VSEIP);
    let intr = vm.intr.clone();
    let t = after(30, move || intr.set_external(0, true).unwrap());
    let e = vm.run();
    t.join().unwrap();
    assert_eq!(
        e,
        Exit::Trap {
            cause: cause::INTERRUPT | IRQ_VS_EXT,
            tval: 0,
            htval: 0,
            htinst: 0
        }
    );
    assert_eq!(vm.csr(UEPC), RAM_GPA + 4, "resumes after the WFI");
    assert_eq!(vm.csr(HUIP), MIP_VSEIP);
    // Once the line is lowered the guest sleeps again.
    vm.intr.set_external(0, false).unwrap();
    let e = {
        let intr = vm.intr.clone();
        let t = after(30, move || intr.kick(0).unwrap());
        let e = vm.run();
        t.join().unwrap();
        e
    };
    assert_eq!(e, Exit::Kicked, "line low: sleeps again");
}

#[test]
fn undelegated_timer_interrupt_exits() {
    let mut vm = TestVm::with_program(
        "
        .option norvc
    1:  addi a0, a0, 1
        j 1b
        ",
    );
    vm.set_csr(HUIE, MIP_VSTIP);
    vm.set_csr(HUVSTIMECMP, 0);
    let (c, _, _, _) = TestVm::trap(vm.run());
    assert_eq!(c, cause::INTERRUPT | IRQ_VS_TIMER);
    assert_ne!(vm.csr(HUIP) & MIP_VSTIP, 0);
    assert_eq!(
        vm.csr(HUVIP) & MIP_VSTIP,
        0,
        "the comparator is not part of huvip"
    );
}

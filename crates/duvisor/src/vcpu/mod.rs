//! vthreads: one host thread per vCPU, running the guest with `huret` and handling every exit
//! itself. Nothing on this path calls into the driver.

pub mod inject;
pub mod mmio;

use std::sync::Arc;

use dvext::csr::*;
use dvext::hart::mmu::is_pte_pseudoinstruction;
use dvext::{Exit, Hart};

use crate::sbi::{self, SbiNext};
use crate::stats::ExitKind;
use crate::vm::control::{HsmState, Outcome};
use crate::vm::watchdog::HangCheck;
use crate::vm::VmShared;
use inject::{inject_exception, skip_instruction};
use mmio::MmioResult;

/// Exceptions the guest handles itself (no exit): misaligned fetch, illegal instruction,
/// breakpoint, misaligned load/store, ecall from VU, and VS-stage page faults.
pub const GUEST_EXCEPTIONS: u64 = (1 << cause::INST_MISALIGNED)
    | (1 << cause::ILLEGAL_INST)
    | (1 << cause::BREAKPOINT)
    | (1 << cause::LOAD_MISALIGNED)
    | (1 << cause::STORE_MISALIGNED)
    | (1 << cause::ECALL_U)
    | (1 << cause::INST_PAGE_FAULT)
    | (1 << cause::LOAD_PAGE_FAULT)
    | (1 << cause::STORE_PAGE_FAULT);

/// Configure a freshly registered hart for running a guest kernel.
pub fn init_hart(hart: &mut Hart, hugatp: u64) {
    let w = |h: &mut Hart, n, v| h.csr_write(n, v).expect("HU CSR");
    w(hart, HUEDELEG, GUEST_EXCEPTIONS);
    w(hart, HUIDELEG, VS_IRQS);
    w(hart, HUCOUNTEREN, 0b111); // cycle, time, instret readable without exits
    w(hart, HUENVCFG, ENVCFG_STCE); // Sstc: the guest programs its own timer
    w(hart, HUGATP, hugatp);
}

/// Reset architectural state for an HSM start at `addr` with a0 = hart ID, a1 = `opaque`.
fn reset_for_start(hart: &mut Hart, addr: u64, opaque: u64) {
    for r in 1..32 {
        hart.set_gpr(r, 0);
    }
    hart.set_gpr(10, hart.vcpu_id() as u64);
    hart.set_gpr(11, opaque);
    let w = |h: &mut Hart, n, v| h.csr_write(n, v).expect("HU CSR");
    w(hart, HUVSSTATUS, 0);
    w(hart, HUVSATP, 0);
    w(hart, HUVSIE, 0);
    w(hart, HUVSTIMECMP, u64::MAX);
    // What firmware gives the kernel (OpenSBI and KVM alike): user space may read cycle,
    // time and instret. Linux without the SBI PMU extension never sets scounteren, and its
    // vDSO reads `time` from VU-mode.
    w(hart, HUVSCOUNTEREN, 0b111);
    let hs = hart.csr_read(HUSTATUS).expect("hustatus");
    w(hart, HUSTATUS, hs | HSTATUS_SPVP | HSTATUS_SPV);
    w(hart, UEPC, addr);
}

enum Next {
    Continue,
    HartStopped,
    VmStop,
}

/// Body of the vthread for `hart`.
pub fn run_vcpu(vm: Arc<VmShared>, mut hart: Hart) {
    let id = hart.vcpu_id() as usize;
    let slot = &vm.harts[id];
    let mut hang = HangCheck::default();
    while let Some((addr, opaque)) = slot.wait_start(&vm.control) {
        reset_for_start(&mut hart, addr, opaque);
        slot.set_started();
        loop {
            let exit = hart.huret();
            if let (Exit::Kicked, Some(limit)) = (&exit, vm.watchdog) {
                if slot.take_probe() {
                    if let Some(stuck) = hang.sample(&mut hart, limit) {
                        vm.stop(Outcome::Hung {
                            vcpu: id as u32,
                            secs: stuck.as_secs(),
                        });
                    }
                }
            }
            match handle_exit(&vm, &mut hart, exit) {
                Next::Continue => {}
                Next::HartStopped => {
                    slot.set_stopped();
                    // Only a running hart can start another: with every hart stopped the VM
                    // can never run again, so end it instead of idling forever.
                    if vm.harts.iter().all(|s| s.state() == HsmState::Stopped) {
                        vm.stop(Outcome::Error(
                            "every vCPU has stopped (SBI HSM hart_stop); none can be started \
                             again"
                                .into(),
                        ));
                    }
                    break;
                }
                Next::VmStop => {
                    vm.retire_hart(&hart);
                    return;
                }
            }
        }
    }
    vm.retire_hart(&hart);
}

fn handle_exit(vm: &VmShared, hart: &mut Hart, exit: Exit) -> Next {
    tracing::trace!(
        vcpu = hart.vcpu_id(),
        ?exit,
        pc = hart.csr_read(UEPC).unwrap_or(0),
        "exit"
    );
    if vm.control.stopping() {
        return Next::VmStop;
    }
    match exit {
        Exit::Trap {
            cause,
            tval,
            htval,
            htinst,
        } => {
            if cause & cause::INTERRUPT != 0 {
                // All VS interrupts are delegated; an HS-level one carries nothing for us.
                vm.stats.count(ExitKind::Other);
                return Next::Continue;
            }
            match cause {
                cause::ECALL_VS => {
                    vm.stats.count(ExitKind::Sbi);
                    match sbi::handle(vm, hart) {
                        SbiNext::Continue => {
                            skip_instruction(hart, 4);
                            Next::Continue
                        }
                        SbiNext::HartStopped => Next::HartStopped,
                        SbiNext::VmStop => Next::VmStop,
                    }
                }
                cause::LOAD_GUEST_PAGE_FAULT
                | cause::STORE_GUEST_PAGE_FAULT
                | cause::INST_GUEST_PAGE_FAULT => {
                    // For an implicit page-table access tval is the guest virtual address of
                    // the original access and htval the PTE's address, 4-byte aligned.
                    let implicit = is_pte_pseudoinstruction(htinst);
                    let gpa = if implicit {
                        htval << 2
                    } else {
                        (htval << 2) | (tval & 3)
                    };
                    guest_page_fault(vm, hart, cause, gpa, tval, htinst, implicit);
                    Next::Continue
                }
                cause::VIRTUAL_INST => {
                    // Nothing the guest may do needs emulating: it sees an illegal instruction.
                    vm.stats.count(ExitKind::VirtualInst);
                    inject_exception(hart, cause::ILLEGAL_INST, tval);
                    Next::Continue
                }
                _ => {
                    vm.stats.count(ExitKind::Other);
                    let pc = hart.csr_read(UEPC).unwrap_or(0);
                    vm.stop(Outcome::Error(format!(
                        "vCPU {}: unexpected exit cause {cause} (tval {tval:#x}) at pc {pc:#x}",
                        hart.vcpu_id()
                    )));
                    Next::VmStop
                }
            }
        }
        Exit::Kicked => {
            vm.stats.count(ExitKind::Kick);
            if vm.control.stopping() {
                Next::VmStop
            } else {
                Next::Continue
            }
        }
        Exit::Halted(reason) => {
            vm.stop(Outcome::Halted(reason));
            Next::VmStop
        }
    }
}

fn guest_page_fault(
    vm: &VmShared,
    hart: &mut Hart,
    cause: u64,
    gpa: u64,
    tval: u64,
    htinst: u64,
    implicit: bool,
) {
    if vm.ram.contains(gpa, 1) {
        vm.stats.count(ExitKind::GStageMap);
        if let Err(e) = vm.map_ram(gpa) {
            vm.stop(Outcome::Error(format!(
                "G-stage mapping of {gpa:#x} failed: {e}"
            )));
            vm.kick_all();
        }
        hart.hufence_gvma(None, Some(gpa));
        return;
    }
    // A VS-stage page table in device space: the walk has no memory to read, and the
    // access that caused it gets an access fault (below), as on hardware without a
    // hypervisor. Emulating it would access the device with side effects.
    if cause != cause::INST_GUEST_PAGE_FAULT && !implicit {
        if let Some((dev, off)) = vm.bus.find(gpa) {
            let store = cause == cause::STORE_GUEST_PAGE_FAULT;
            match mmio::emulate(hart, dev.as_ref(), off, gpa, store, tval, htinst) {
                MmioResult::Read => vm.stats.count(ExitKind::MmioRead),
                MmioResult::Write => vm.stats.count(ExitKind::MmioWrite),
                MmioResult::Faulted => vm.stats.count(ExitKind::AccessFault),
            }
            return;
        }
    }
    // A hole in the guest-physical map, or instruction fetch from a device.
    vm.stats.count(ExitKind::AccessFault);
    let c = match cause {
        cause::INST_GUEST_PAGE_FAULT => cause::INST_ACCESS,
        cause::LOAD_GUEST_PAGE_FAULT => cause::LOAD_ACCESS,
        _ => cause::STORE_ACCESS,
    };
    inject_exception(hart, c, tval);
}

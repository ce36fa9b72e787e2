//! Trap routing: a trap is delivered to the guest (VS) when delegated through huedeleg /
//! huideleg, and otherwise becomes a VM exit handed to the user-level hypervisor.

use super::cpu::Cpu;
use super::inst::{Inst, Op};
use super::mmu::Fault;
use crate::csr::*;
use crate::exit::{Emergency, Exit, HaltReason};

/// A synchronous trap raised while executing guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trap {
    Exc {
        cause: u64,
        tval: u64,
        /// Faulting guest-physical address for guest-page faults (0 otherwise).
        gpa: u64,
        htinst: u64,
        /// tval holds a guest virtual address (hustatus.GVA).
        gva: bool,
    },
    /// The PMC refused a host-physical address: an emergency for the hypervisor plane.
    Pmc { hpa: u64, va: u64 },
}

impl Trap {
    pub fn exc(cause: u64, tval: u64) -> Trap {
        Trap::Exc {
            cause,
            tval,
            gpa: 0,
            htinst: 0,
            gva: false,
        }
    }

    pub fn illegal(inst: &Inst) -> Trap {
        Trap::exc(cause::ILLEGAL_INST, inst.raw as u64)
    }

    pub fn virtual_inst(inst: &Inst) -> Trap {
        Trap::exc(cause::VIRTUAL_INST, inst.raw as u64)
    }

    pub fn from_fault(f: Fault, va: u64) -> Trap {
        match f {
            Fault::Page { cause } | Fault::Access { cause } => Trap::Exc {
                cause,
                tval: va,
                gpa: 0,
                htinst: 0,
                gva: false,
            },
            Fault::GuestPage { cause, gpa, htinst } => Trap::Exc {
                cause,
                tval: va,
                gpa,
                htinst: htinst as u64,
                gva: true,
            },
            Fault::Pmc { hpa } => Trap::Pmc { hpa, va },
        }
    }
}

/// The transformed instruction written to hutinst for a trapping explicit memory access
/// (H extension, "Transformed Instruction"): immediate and rs1 fields cleared (the address
/// offset is 0), bit 1 clear when the original was compressed. 0 for anything else.
pub fn transformed_inst(inst: &Inst) -> u64 {
    use Op::*;
    let (opcode, f3, store) = match inst.op {
        Lb => (0x03, 0, false),
        Lh => (0x03, 1, false),
        Lw => (0x03, 2, false),
        Ld => (0x03, 3, false),
        Lbu => (0x03, 4, false),
        Lhu => (0x03, 5, false),
        Lwu => (0x03, 6, false),
        Sb => (0x23, 0, true),
        Sh => (0x23, 1, true),
        Sw => (0x23, 2, true),
        Sd => (0x23, 3, true),
        Flw => (0x07, 2, false),
        Fld => (0x07, 3, false),
        Fsw => (0x27, 2, true),
        Fsd => (0x27, 3, true),
        LrW | ScW | AmoswapW | AmoaddW | AmoxorW | AmoandW | AmoorW | AmominW | AmomaxW
        | AmominuW | AmomaxuW | LrD | ScD | AmoswapD | AmoaddD | AmoxorD | AmoandD | AmoorD
        | AmominD | AmomaxD | AmominuD | AmomaxuD => {
            return (inst.raw & !(0x1f << 15)) as u64;
        }
        _ => return 0,
    };
    let t = if store {
        (inst.rs2 as u32) << 20 | f3 << 12 | opcode
    } else {
        (inst.rd_arch() as u32) << 7 | f3 << 12 | opcode
    };
    let t = if inst.len() == 2 { t & !2 } else { t };
    t as u64
}

impl Cpu {
    /// Deliver a synchronous trap raised by the instruction at `pc`.
    pub fn raise(&mut self, trap: Trap, pc: u64) -> Option<Exit> {
        match trap {
            Trap::Pmc { hpa, va } => {
                self.platform.emergency(Emergency::PmcViolation {
                    vmid: self.vmid,
                    vcpu: self.vcpu_id,
                    hpa,
                    va,
                });
                let reason = HaltReason::PmcViolation { hpa, va };
                self.platform.halt_vm(self.vmid, reason);
                self.uepc = pc;
                Some(Exit::Halted(reason))
            }
            Trap::Exc {
                cause,
                tval,
                gpa,
                htinst,
                gva,
            } => {
                if cause < 64 && (self.hedeleg >> cause) & 1 != 0 {
                    self.trap_to_vs(cause, tval, pc);
                    None
                } else {
                    // hstatus.GVA: set for every trap that writes a guest virtual address to
                    // utval (breakpoint, misaligned, access and page faults), not only for
                    // guest-page faults.
                    let gva = gva
                        || matches!(
                            cause,
                            cause::INST_MISALIGNED
                                | cause::INST_ACCESS
                                | cause::BREAKPOINT
                                | cause::LOAD_MISALIGNED
                                | cause::LOAD_ACCESS
                                | cause::STORE_MISALIGNED
                                | cause::STORE_ACCESS
                                | cause::INST_PAGE_FAULT
                                | cause::LOAD_PAGE_FAULT
                                | cause::STORE_PAGE_FAULT
                        );
                    Some(self.exit_trap(cause, tval, gpa >> 2, htinst, gva, pc))
                }
            }
        }
    }

    /// Enter the guest's trap handler (VS-mode) with `cause`/`tval`, `pc` as the return address.
    pub fn trap_to_vs(&mut self, cause: u64, tval: u64, pc: u64) {
        self.vsepc = pc;
        self.vscause = cause;
        self.vstval = tval;
        let s = self.vsstatus;
        let mut n = s & !(SSTATUS_SPP | SSTATUS_SPIE | SSTATUS_SIE);
        if !self.user {
            n |= SSTATUS_SPP;
        }
        if s & SSTATUS_SIE != 0 {
            n |= SSTATUS_SPIE;
        }
        self.vsstatus = n;
        self.user = false;
        self.update_mmu_idx();
        let base = self.vstvec & !3;
        self.pc = if cause & cause::INTERRUPT != 0 && self.vstvec & 3 == 1 {
            base.wrapping_add(4 * (cause & !cause::INTERRUPT))
        } else {
            base
        };
        self.resv = None;
    }

    /// Record an exit in the HU trap registers.
    pub fn exit_trap(
        &mut self,
        cause: u64,
        tval: u64,
        htval: u64,
        htinst: u64,
        gva: bool,
        pc: u64,
    ) -> Exit {
        self.uepc = pc;
        self.pc = pc;
        self.ucause = cause;
        self.utval = tval;
        self.htval = htval;
        self.htinst = htinst;
        let mut hs = self.hstatus & !(HSTATUS_SPVP | HSTATUS_GVA);
        hs |= HSTATUS_SPV;
        if !self.user {
            hs |= HSTATUS_SPVP;
        }
        if gva {
            hs |= HSTATUS_GVA;
        }
        self.hstatus = hs;
        self.resv = None;
        Exit::Trap {
            cause,
            tval,
            htval,
            htinst,
        }
    }

    /// Whether [`Cpu::check_interrupts`] would take an interrupt now.
    pub fn interrupt_deliverable(&self) -> bool {
        self.takes_one_of(self.pending_irqs())
    }

    /// Whether one of the `pending` interrupts is taken now: one not delegated to the guest
    /// always (HS-level interrupts are always enabled while V=1), a delegated one in VU-mode
    /// or with `sstatus.SIE` set.
    #[inline(always)]
    fn takes_one_of(&self, pending: u64) -> bool {
        pending & !self.hideleg != 0
            || (pending != 0 && (self.user || self.vsstatus & SSTATUS_SIE != 0))
    }

    /// Take the highest-priority pending interrupt, if the guest (or HU) may take it now.
    pub fn check_interrupts(&mut self) -> Option<Exit> {
        let p = self.pending_irqs();
        if !self.takes_one_of(p) {
            return None;
        }
        let hs = p & !self.hideleg;
        let pc = self.pc;
        if hs != 0 {
            // Not delegated: the hypervisor handles it.
            let bit = highest_irq(hs);
            return Some(self.exit_trap(cause::INTERRUPT | bit, 0, 0, 0, false, pc));
        }
        let bit = highest_irq(p);
        // VS-level interrupt bits appear to the guest one position lower (VSSIP -> SSIP).
        self.irqs_taken += 1;
        self.trap_to_vs(cause::INTERRUPT | (bit - 1), 0, pc);
        None
    }
}

/// Priority order of the VS-level interrupts: external, software, timer.
fn highest_irq(p: u64) -> u64 {
    for bit in [IRQ_VS_EXT, IRQ_VS_SOFT, IRQ_VS_TIMER] {
        if p & (1 << bit) != 0 {
            return bit;
        }
    }
    p.trailing_zeros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hart::decode::decode;

    #[test]
    fn transformed_load_and_store() {
        // lw a0, 12(a1) -> rs1 and imm cleared
        let lw = decode(0x00c5a503);
        assert_eq!(transformed_inst(&lw), 0x0000_2503);
        // sd a0, 8(sp) -> 0x00a13423; imm and rs1 cleared
        let sd = decode(0x00a13423);
        assert_eq!(transformed_inst(&sd), 0x00a0_3023);
        // c.lw a0, 0(a1) = 0x4188 -> lw a0 with bit 1 clear
        let clw = decode(0x4188);
        assert_eq!(transformed_inst(&clw), 0x0000_2501);
    }
}

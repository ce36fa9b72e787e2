//! CSR instructions executed by the guest (V=1): S-level numbers reach the VS copies, counters
//! follow hucounteren, hypervisor-level and HU CSRs raise virtual-instruction exceptions, and
//! machine-level ones are illegal — as the H extension specifies.

use std::sync::atomic::Ordering;

use super::cpu::Cpu;
use super::inst::{Inst, Op, X0_SINK};
use super::trap::Trap;
use crate::csr::*;

const SSTATUS_READABLE: u64 = SSTATUS_SIE
    | SSTATUS_SPIE
    | SSTATUS_UBE
    | SSTATUS_SPP
    | SSTATUS_VS
    | SSTATUS_FS
    | SSTATUS_XS
    | SSTATUS_SUM
    | SSTATUS_MXR
    | SSTATUS_UXL
    | SSTATUS_SD;

impl Cpu {
    /// Execute a Zicsr instruction.
    pub fn exec_csr(&mut self, inst: &Inst) -> Result<(), Trap> {
        let (csr, writes) = inst.csr_access().expect("not a CSR instruction");
        let src = match inst.op {
            Op::Csrrw | Op::Csrrs | Op::Csrrc => self.xr(inst.rs1),
            _ => inst.rs1 as u64,
        };
        if writes && csr >> 10 == 3 {
            // Read-only CSR: but a privilege violation takes precedence.
            self.check_csr_access(csr, inst)?;
            return Err(Trap::illegal(inst));
        }
        let old = self.guest_csr_read(csr, inst)?;
        if writes {
            let new = match inst.op {
                Op::Csrrw | Op::Csrrwi => src,
                Op::Csrrs | Op::Csrrsi => old | src,
                _ => old & !src,
            };
            self.guest_csr_write(csr, new, inst)?;
        }
        if inst.rd != X0_SINK {
            self.xw(inst.rd, old);
        }
        Ok(())
    }

    /// Privilege check for guest access to `csr` (independent of read/write).
    fn check_csr_access(&self, csr: u16, inst: &Inst) -> Result<(), Trap> {
        match (csr >> 8) & 3 {
            0 => {
                // User-level numbers: the 0x8xx HU CSRs exist only for the hypervisor.
                if (0x800..0x900).contains(&csr) {
                    return Err(Trap::virtual_inst(inst));
                }
                Ok(())
            }
            1 if self.user => Err(Trap::virtual_inst(inst)),
            1 => Ok(()),
            // Hypervisor and VS CSRs from V=1.
            2 => Err(Trap::virtual_inst(inst)),
            _ => Err(Trap::illegal(inst)),
        }
    }

    fn counter_check(&self, csr: u16, inst: &Inst) -> Result<(), Trap> {
        let bit = 1u64 << (csr & 0x1f);
        if self.hcounteren & bit == 0 {
            return Err(Trap::virtual_inst(inst));
        }
        if self.user && self.vscounteren & bit == 0 {
            return Err(Trap::virtual_inst(inst));
        }
        Ok(())
    }

    fn guest_csr_read(&mut self, csr: u16, inst: &Inst) -> Result<u64, Trap> {
        self.check_csr_access(csr, inst)?;
        Ok(match csr {
            FFLAGS | FRM | FCSR => {
                if self.fs_off() {
                    return Err(Trap::illegal(inst));
                }
                match csr {
                    FFLAGS => self.fflags as u64,
                    FRM => self.frm as u64,
                    _ => (self.frm as u64) << 5 | self.fflags as u64,
                }
            }
            CYCLE | INSTRET => {
                self.counter_check(csr, inst)?;
                self.instret
            }
            TIME => {
                self.counter_check(csr, inst)?;
                self.time()
            }
            0xC03..=0xC1F => {
                self.counter_check(csr, inst)?;
                0
            }
            SSTATUS => self.vsstatus & SSTATUS_READABLE,
            SIE => (self.hie & self.hideleg & VS_IRQS) >> 1,
            STVEC => self.vstvec,
            SCOUNTEREN => self.vscounteren,
            SENVCFG => self.vsenvcfg,
            SSCRATCH => self.vsscratch,
            SEPC => self.vsepc,
            SCAUSE => self.vscause,
            STVAL => self.vstval,
            SIP => {
                self.update_vstip();
                let hvip = self.shared.hvip.load(Ordering::Relaxed)
                    | if self.vstip { MIP_VSTIP } else { 0 };
                (hvip & self.hideleg & VS_IRQS) >> 1
            }
            STIMECMP => {
                // Sstc: with V=1, stimecmp (really vstimecmp) needs henvcfg.STCE and
                // hcounteren.TM, else a virtual-instruction exception.
                if self.henvcfg & ENVCFG_STCE == 0 || self.hcounteren & (1 << (TIME & 0x1f)) == 0 {
                    return Err(Trap::virtual_inst(inst));
                }
                self.vstimecmp
            }
            SATP => {
                if self.hstatus & HSTATUS_VTVM != 0 {
                    return Err(Trap::virtual_inst(inst));
                }
                self.vsatp
            }
            _ => return Err(Trap::illegal(inst)),
        })
    }

    fn guest_csr_write(&mut self, csr: u16, val: u64, inst: &Inst) -> Result<(), Trap> {
        match csr {
            FFLAGS => {
                self.fflags = (val & 0x1f) as u8;
                self.fs_dirty();
            }
            FRM => {
                self.frm = (val & 7) as u8;
                self.fs_dirty();
            }
            FCSR => {
                self.fflags = (val & 0x1f) as u8;
                self.frm = ((val >> 5) & 7) as u8;
                self.fs_dirty();
            }
            SSTATUS => self.write_vsstatus(val),
            SIE => {
                let m = self.hideleg & VS_IRQS;
                self.hie = (self.hie & !m) | ((val << 1) & m);
            }
            STVEC => {
                self.vstvec = if val & 3 >= 2 {
                    (val & !3) | (self.vstvec & 3)
                } else {
                    val
                }
            }
            SCOUNTEREN => self.vscounteren = val & 0xffff_ffff,
            SENVCFG => self.vsenvcfg = 0,
            SSCRATCH => self.vsscratch = val,
            SEPC => self.vsepc = val & !1,
            SCAUSE => self.vscause = val,
            STVAL => self.vstval = val,
            SIP => {
                // Only the software-interrupt bit is writable, and only if delegated.
                if self.hideleg & MIP_VSSIP != 0 {
                    if val & (1 << IRQ_S_SOFT) != 0 {
                        self.shared.hvip.fetch_or(MIP_VSSIP, Ordering::SeqCst);
                    } else {
                        self.shared.hvip.fetch_and(!MIP_VSSIP, Ordering::SeqCst);
                    }
                }
            }
            STIMECMP => {
                self.vstimecmp = val;
                self.update_vstip();
            }
            SATP => self.write_vsatp(val),
            _ => return Err(Trap::illegal(inst)),
        }
        // Interrupt enables or pending state may have changed: re-check at the next boundary.
        self.poll = 0;
        Ok(())
    }

    pub fn write_vsstatus(&mut self, val: u64) {
        let old = self.vsstatus;
        let mut n = (old & !SSTATUS_WRITABLE) | (val & SSTATUS_WRITABLE);
        n = (n & !SSTATUS_UXL) | UXL_64;
        if n & SSTATUS_FS == SSTATUS_FS {
            n |= SSTATUS_SD;
        } else {
            n &= !SSTATUS_SD;
        }
        self.vsstatus = n;
        if (old ^ n) & SSTATUS_MXR != 0 {
            self.tlb.flush_reads();
        }
        self.update_mmu_idx();
    }

    /// A vsatp write: unsupported modes leave the register unchanged, as the spec requires.
    pub fn write_vsatp(&mut self, val: u64) {
        let mode = val >> 60;
        if !matches!(
            mode,
            SATP_MODE_BARE | SATP_MODE_SV39 | SATP_MODE_SV48 | SATP_MODE_SV57
        ) {
            return;
        }
        // The TLB is not ASID-tagged, so any change of address space drops it.
        self.vsatp = val;
        self.tlb.flush_all();
    }
}

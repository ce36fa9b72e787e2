//! Architectural state of one hart running a guest, plus its engine-private caches.

use std::sync::Arc;

use super::mmu::WalkCtx;
use super::tlb::{Tlb, MMU_VS, MMU_VS_SUM, MMU_VU};
use crate::csr::*;
use crate::doorbell::HartShared;
use crate::phys_mem::PhysMemory;
use crate::platform::PlatformInner;
use crate::pmc::{Pmc, Vmid};

/// Blocks executed between two full checks of the timer and cross-thread requests.
pub(crate) const POLL_INTERVAL: u32 = 256;
/// Retired instructions between two reads of the host clock for the Sstc comparator.
pub(crate) const CLOCK_INTERVAL: u64 = 4096;

pub(crate) struct Cpu {
    /// x0..x31, then the x0 sink slot; padded to 256 so indexing with a `u8` register number
    /// needs neither a bounds check nor a mask.
    pub x: [u64; 256],
    pub f: [u64; 32],
    pub pc: u64,
    /// Running in VU (else VS).
    pub user: bool,
    /// TLB context for the current privilege and SUM.
    pub mmu_idx: usize,
    pub fflags: u8,
    pub frm: u8,

    // VS-level CSRs (what the guest sees as its S-mode CSRs)
    pub vsstatus: u64,
    pub vstvec: u64,
    pub vsscratch: u64,
    pub vsepc: u64,
    pub vscause: u64,
    pub vstval: u64,
    pub vsatp: u64,
    pub vstimecmp: u64,
    pub vscounteren: u64,
    pub vsenvcfg: u64,

    // HU CSRs
    pub hstatus: u64,
    pub hedeleg: u64,
    pub hideleg: u64,
    pub hie: u64,
    pub htimedelta: u64,
    pub hcounteren: u64,
    pub henvcfg: u64,
    pub htval: u64,
    pub htinst: u64,
    pub hgatp: u64,
    pub utvec: u64,
    pub uepc: u64,
    pub ucause: u64,
    pub utval: u64,

    /// Sstc comparator output as of the last poll.
    pub vstip: bool,
    /// Blocks left before the next full poll.
    pub poll: u32,
    pub instret: u64,
    /// instret when the comparator was last evaluated against the host clock.
    pub clock_instret: u64,
    /// LR reservation: (address, size, value loaded), matched by SC by value.
    pub resv: Option<(u64, u64, u64)>,
    /// A trap raised in a compiled block's slow path, handed to the run loop.
    pub jit_trap: Option<super::trap::Trap>,
    /// How an instruction a compiled region had the interpreter run ended, when it did not
    /// simply complete (it trapped), handed to the run loop.
    pub jit_flow: Option<super::exec::Flow>,
    /// Traps raised by instructions (to tell a completed instruction from a trapping one).
    pub traps: u64,
    /// Interrupts delivered to the guest (taken in VS-mode), like an HPM event counter.
    pub irqs_taken: u64,
    pub tlb: Tlb,

    pub mem: Arc<PhysMemory>,
    pub pmc: Arc<Pmc>,
    pub platform: Arc<PlatformInner>,
    pub shared: Arc<HartShared>,
    pub vmid: Vmid,
    pub vcpu_id: u32,
}

impl Cpu {
    pub fn new(platform: Arc<PlatformInner>, shared: Arc<HartShared>) -> Self {
        Cpu {
            x: [0; 256],
            f: [0; 32],
            pc: 0,
            user: false,
            mmu_idx: MMU_VS,
            fflags: 0,
            frm: 0,
            vsstatus: UXL_64,
            vstvec: 0,
            vsscratch: 0,
            vsepc: 0,
            vscause: 0,
            vstval: 0,
            vsatp: 0,
            vstimecmp: u64::MAX,
            vscounteren: 0,
            vsenvcfg: 0,
            hstatus: HSTATUS_VSXL_64 | HSTATUS_SPV | HSTATUS_SPVP,
            hedeleg: 0,
            hideleg: 0,
            hie: 0,
            htimedelta: 0,
            hcounteren: 0,
            henvcfg: ENVCFG_STCE,
            htval: 0,
            htinst: 0,
            hgatp: 0,
            utvec: 0,
            uepc: 0,
            ucause: 0,
            utval: 0,
            vstip: false,
            poll: 0,
            instret: 0,
            clock_instret: 0,
            resv: None,
            jit_trap: None,
            jit_flow: None,
            traps: 0,
            irqs_taken: 0,
            tlb: Tlb::new(),
            mem: platform.mem.clone(),
            pmc: platform.pmc.clone(),
            vmid: shared.vmid,
            vcpu_id: shared.vcpu_id,
            platform,
            shared,
        }
    }

    #[inline(always)]
    pub fn xr(&self, r: u8) -> u64 {
        self.x[r as usize]
    }

    #[inline(always)]
    pub fn xw(&mut self, r: u8, v: u64) {
        self.x[r as usize] = v;
    }

    /// Recompute the TLB context after a change of privilege or vsstatus.SUM.
    #[inline]
    pub fn update_mmu_idx(&mut self) {
        self.mmu_idx = if self.user {
            MMU_VU
        } else if self.vsstatus & SSTATUS_SUM != 0 {
            MMU_VS_SUM
        } else {
            MMU_VS
        };
    }

    pub fn walk_ctx_for(&self, mmu_idx: usize, hlvx: bool) -> WalkCtx {
        WalkCtx {
            vsatp: self.vsatp,
            hgatp: self.hgatp,
            vmid: self.vmid,
            user: mmu_idx == MMU_VU,
            sum: mmu_idx == MMU_VS_SUM,
            mxr: self.vsstatus & SSTATUS_MXR != 0,
            hlvx,
        }
    }

    /// Guest-visible `time`.
    #[inline]
    pub fn time(&self) -> u64 {
        self.platform.timebase.now().wrapping_add(self.htimedelta)
    }

    /// Re-evaluate the Sstc comparator.
    pub fn update_vstip(&mut self) {
        self.vstip = self.henvcfg & ENVCFG_STCE != 0 && self.time() >= self.vstimecmp;
    }

    /// VS-level interrupts pending and enabled in hie (before the guest's global enable).
    #[inline]
    pub fn pending_irqs(&self) -> u64 {
        let hvip = self.shared.hvip.load(std::sync::atomic::Ordering::Relaxed);
        (hvip | if self.vstip { MIP_VSTIP } else { 0 }) & self.hie
    }

    /// Mark the FP state dirty after an FP register or fflags write.
    #[inline(always)]
    pub fn fs_dirty(&mut self) {
        self.vsstatus |= SSTATUS_FS | SSTATUS_SD;
    }

    #[inline(always)]
    pub fn fs_off(&self) -> bool {
        self.vsstatus & SSTATUS_FS == 0
    }
}

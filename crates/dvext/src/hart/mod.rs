//! The hart: guest execution engine behind the DV-Ext interface.
//!
//! A [`Hart`] is owned by one host thread (DuVisor's vthread for that vCPU). Its public methods
//! are the DV-Ext ISA as seen from HU-mode: HU CSR access, `huret`, `hufence_gvma`, and the
//! hypervisor load/store instructions. Other threads reach it only through doorbells.

mod block;
mod cpu;
pub mod decode;
mod exec;
pub mod fpu;
mod guest_csr;
pub mod inst;
mod jit;
mod memory;
pub mod mmu;
mod tlb;
mod trap;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use block::{Block, BlockCache, Link, Next, COMPILING, NEVER_COMPILE};
use cpu::{Cpu, CLOCK_INTERVAL, POLL_INTERVAL};
use exec::Flow;
use inst::Inst;
use jit::{Compiled, Jit, JitEnv, JitFn, JobTag, RET_FLOW, RET_TRAP};
use mmu::Access;
use tlb::{ACC_READ, ACC_WRITE};
use trap::Trap;

use crate::csr::{self, *};
use crate::doorbell::{req, HartShared};
use crate::exit::{Emergency, Exit, HaltReason};
use crate::phys_mem::{PAGE_SHIFT, PAGE_SIZE};
use crate::platform::PlatformInner;
use crate::pmc::Vmid;

pub use jit::{JitPool, JitPoolSettings, JitStats, DEFAULT_THRESHOLD as JIT_DEFAULT_THRESHOLD};
pub use trap::transformed_inst;

/// An HU CSR access that names no CSR this hart implements.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no HU-accessible CSR {0:#05x}")]
pub struct NoSuchCsr(pub u16);

/// A fault taken by a hypervisor load/store (`hlv`/`hsv`) issued from HU-mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest access fault: cause {cause}, tval {tval:#x}, gpa {gpa:#x}")]
pub struct GuestAccessFault {
    pub cause: u64,
    pub tval: u64,
    pub gpa: u64,
}

/// Execution counters of one hart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HartStats {
    pub instret: u64,
    pub blocks_cached: usize,
    /// Blocks decoded (first use, or rebuilt after their code page was written).
    pub blocks_built: u64,
    /// Whole decoded-block cache flushes (cache full).
    pub block_flushes: u64,
    /// fence.i executed (locally or by remote request).
    pub fence_i: u64,
    /// Software-TLB entries filled by a page walk, misses served by an entry the TLB had
    /// evicted instead, and whole-TLB flushes.
    pub tlb_fills: u64,
    pub tlb_refound: u64,
    pub tlb_flushes: u64,
    /// Zihintpause `pause` hints executed, and how many times a run of them gave the host
    /// CPU away.
    pub pauses: u64,
    pub pause_yields: u64,
    /// The compiling tier's counters (all zero when it is off).
    pub jit: JitStats,
}

/// See [`Hart::compiled`].
const INLINE_AFTER: u32 = 2;
/// See [`Hart::spin_hint`].
const SPIN_GAP: u64 = 256;
const SPIN_YIELD_AFTER: u32 = 32;

pub struct Hart {
    cpu: Cpu,
    cache: BlockCache,
    /// The compiling tier, when enabled.
    jit: Option<Jit>,
    /// Thread registered for WFI wake-ups (re-registered only if huret moves threads).
    thread: Option<std::thread::ThreadId>,
    /// See [`HartStats::pauses`] and [`HartStats::pause_yields`].
    pauses: u64,
    pause_yields: u64,
    /// instret at the last `pause`, and pauses in a row (see [`Hart::spin_hint`]).
    spin_at: u64,
    spin_run: u32,
}

impl std::fmt::Debug for Hart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hart")
            .field("vmid", &self.cpu.vmid)
            .field("vcpu", &self.cpu.vcpu_id)
            .finish()
    }
}

impl Hart {
    pub(crate) fn new(platform: Arc<PlatformInner>, shared: Arc<HartShared>) -> Self {
        if platform.halt_reason(shared.vmid).is_some() {
            shared.req.fetch_or(req::HALT, Ordering::SeqCst);
        }
        Hart {
            cpu: Cpu::new(platform, shared),
            cache: BlockCache::new(),
            jit: None,
            thread: None,
            pauses: 0,
            pause_yields: 0,
            spin_at: 0,
            spin_run: 0,
        }
    }

    pub fn vmid(&self) -> Vmid {
        self.cpu.vmid
    }

    pub fn vcpu_id(&self) -> u32 {
        self.cpu.vcpu_id
    }

    /// Interrupts the guest has taken so far (delivered in VS-mode; a hypervisor watchdog
    /// tells a busy guest from a locked-up one by whether this moves).
    pub fn interrupts_taken(&self) -> u64 {
        self.cpu.irqs_taken
    }

    pub fn stats(&self) -> HartStats {
        HartStats {
            instret: self.cpu.instret,
            blocks_cached: self.cache.len(),
            blocks_built: self.cache.built,
            block_flushes: self.cache.flushes,
            fence_i: self.cache.fences,
            tlb_fills: self.cpu.tlb.fills,
            tlb_refound: self.cpu.tlb.refound,
            tlb_flushes: self.cpu.tlb.flushes,
            pauses: self.pauses,
            pause_yields: self.pause_yields,
            jit: self.jit.as_ref().map(|j| j.stats).unwrap_or_default(),
        }
    }

    /// Turn on the compiling tier: blocks run `threshold` times become host code. It maps
    /// its code space now (memory that is written through one mapping and executed through
    /// another), so call it before the process forbids new executable mappings. With a `pool`
    /// (one per VM) regions compile on the pool's thread while the guest runs on in the
    /// interpreter, and code one hart compiled is copied by the others; without, compilation
    /// is inline and deterministic (a block's `threshold`-th run is already compiled). Called
    /// again, it replaces the tier and its code with a new one.
    pub fn enable_jit(&mut self, threshold: u32, pool: Option<&JitPool>) -> Result<(), String> {
        let jit = Jit::new(threshold, pool)?;
        self.cache.drop_compiled();
        self.jit = Some(jit);
        Ok(())
    }

    /// Whether the compiling tier is on.
    pub fn jit_enabled(&self) -> bool {
        self.jit.is_some()
    }

    /// The descriptor of the memfd this hart writes its compiled code into (`pwrite`, and
    /// `fallocate` to empty it), when the compiling tier is on: the only descriptor a sandbox
    /// needs to let the hart's thread write.
    pub fn jit_code_fd(&self) -> Option<std::os::fd::RawFd> {
        self.jit.as_ref().map(|j| j.code_fd())
    }

    // ---------------------------------------------------------------- guest registers

    /// Guest integer register `r` (as saved on the exit).
    pub fn gpr(&self, r: usize) -> u64 {
        if r == 0 || r > 31 {
            0
        } else {
            self.cpu.x[r]
        }
    }

    pub fn set_gpr(&mut self, r: usize, v: u64) {
        if (1..32).contains(&r) {
            self.cpu.x[r] = v;
        }
    }

    /// Guest FP register `r` (raw 64 bits).
    pub fn fpr(&self, r: usize) -> u64 {
        self.cpu.f[r & 31]
    }

    pub fn set_fpr(&mut self, r: usize, v: u64) {
        self.cpu.f[r & 31] = v;
    }

    // ---------------------------------------------------------------- HU CSRs

    /// Read an HU-accessible CSR: the user trap registers, the HU CSRs, and the VS CSRs in the
    /// 0x400 range.
    pub fn csr_read(&mut self, n: u16) -> Result<u64, NoSuchCsr> {
        let c = &mut self.cpu;
        Ok(match n {
            csr::UEPC => c.uepc,
            csr::UCAUSE => c.ucause,
            csr::UTVAL => c.utval,
            csr::UTVEC => c.utvec,
            HUSTATUS => c.hstatus,
            HUEDELEG => c.hedeleg,
            HUIDELEG => c.hideleg,
            HUIE => c.hie,
            HUTIMEDELTA => c.htimedelta,
            HUCOUNTEREN => c.hcounteren,
            HUENVCFG => c.henvcfg,
            HUTVAL => c.htval,
            HUIP => {
                c.update_vstip();
                c.shared.hvip.load(Ordering::SeqCst) | if c.vstip { MIP_VSTIP } else { 0 }
            }
            HUVIP => c.shared.hvip.load(Ordering::SeqCst),
            HUTINST => c.htinst,
            HUGATP => c.hgatp,
            HUVCPUID => c.vcpu_id as u64,
            HUVMID => c.vmid as u64,
            HUVSSTATUS => c.vsstatus,
            HUVSIE => (c.hie & VS_IRQS) >> 1,
            HUVSTVEC => c.vstvec,
            HUVSSCRATCH => c.vsscratch,
            HUVSEPC => c.vsepc,
            HUVSCAUSE => c.vscause,
            HUVSTVAL => c.vstval,
            HUVSIP => {
                c.update_vstip();
                let hvip =
                    c.shared.hvip.load(Ordering::SeqCst) | if c.vstip { MIP_VSTIP } else { 0 };
                (hvip & VS_IRQS) >> 1
            }
            HUVSTIMECMP => c.vstimecmp,
            HUVSATP => c.vsatp,
            HUVSCOUNTEREN => c.vscounteren,
            csr::FCSR => (c.frm as u64) << 5 | c.fflags as u64,
            csr::TIME => c.time(),
            _ => return Err(NoSuchCsr(n)),
        })
    }

    /// Write an HU-accessible CSR (read-only ones, such as hutval, are accepted and ignored
    /// only where the H extension makes them writable; others report `NoSuchCsr`).
    pub fn csr_write(&mut self, n: u16, v: u64) -> Result<(), NoSuchCsr> {
        let c = &mut self.cpu;
        match n {
            csr::UEPC => c.uepc = v & !1,
            csr::UCAUSE => c.ucause = v,
            csr::UTVAL => c.utval = v,
            csr::UTVEC => c.utvec = v,
            HUSTATUS => c.hstatus = (c.hstatus & !HSTATUS_WRITABLE) | (v & HSTATUS_WRITABLE),
            HUEDELEG => {
                // Delegable: causes 0-8, 12, 13, 15. ECALL_VS, the guest-page faults and
                // virtual-instruction (10, 20-23) can never be handled by the guest: read-only 0.
                c.hedeleg = v & 0xb1ff;
            }
            HUIDELEG => c.hideleg = v & VS_IRQS,
            HUIE => c.hie = v & VS_IRQS,
            HUTIMEDELTA => c.htimedelta = v,
            HUCOUNTEREN => c.hcounteren = v & 0xffff_ffff,
            HUENVCFG => c.henvcfg = v & ENVCFG_STCE,
            HUTVAL => c.htval = v,
            HUIP | HUVIP => {
                // VSSIP/VSTIP/VSEIP are writable here (hvip); huip's VSSIP aliases it.
                let keep = if n == HUIP { MIP_VSTIP | MIP_VSEIP } else { 0 };
                let cur = c.shared.hvip.load(Ordering::SeqCst);
                c.shared
                    .hvip
                    .store((cur & keep) | (v & VS_IRQS & !keep), Ordering::SeqCst);
            }
            HUTINST => c.htinst = v,
            HUGATP => {
                let mode = v >> 60;
                if matches!(mode, 0 | HGATP_MODE_SV39X4 | HGATP_MODE_SV48X4) {
                    // The VMID field is fixed by the driver: a VM cannot claim another's.
                    let vmid_mask = ((1u64 << HGATP_VMID_BITS) - 1) << HGATP_VMID_SHIFT;
                    c.hgatp = (v & !vmid_mask & ((0xf << 60) | ATP_PPN_MASK & !3))
                        | ((c.vmid as u64) << HGATP_VMID_SHIFT);
                    c.tlb.flush_all();
                }
            }
            HUVSSTATUS => c.write_vsstatus(v),
            HUVSIE => c.hie = (c.hie & !VS_IRQS) | ((v << 1) & VS_IRQS),
            HUVSTVEC => c.vstvec = v,
            HUVSSCRATCH => c.vsscratch = v,
            HUVSEPC => c.vsepc = v & !1,
            HUVSCAUSE => c.vscause = v,
            HUVSTVAL => c.vstval = v,
            HUVSIP => {
                let cur = c.shared.hvip.load(Ordering::SeqCst);
                let n = (cur & !MIP_VSSIP) | ((v << 1) & MIP_VSSIP);
                c.shared.hvip.store(n, Ordering::SeqCst);
            }
            HUVSTIMECMP => {
                c.vstimecmp = v;
                c.update_vstip();
            }
            HUVSATP => c.write_vsatp(v),
            HUVSCOUNTEREN => c.vscounteren = v & 0xffff_ffff,
            csr::FCSR => {
                c.fflags = (v & 0x1f) as u8;
                c.frm = ((v >> 5) & 7) as u8;
            }
            _ => return Err(NoSuchCsr(n)),
        }
        c.poll = 0;
        Ok(())
    }

    // ---------------------------------------------------------------- fences

    /// `hufence.gvma`: drop cached translations derived from the G-stage table. `gpa` limits
    /// the flush to one guest-physical page (the software TLB is virtually indexed, so a
    /// by-address flush still drops every entry; it is exact, never stale). `vmid` other than
    /// this hart's flushes nothing.
    pub fn hufence_gvma(&mut self, vmid: Option<Vmid>, _gpa: Option<u64>) {
        if vmid.is_none_or(|v| v == self.cpu.vmid) {
            self.cpu.tlb.flush_all();
        }
    }

    // ---------------------------------------------------------------- hlv / hsv

    fn guest_access_ctx(&self) -> usize {
        if self.cpu.hstatus & HSTATUS_SPVP != 0 {
            if self.cpu.vsstatus & SSTATUS_SUM != 0 {
                tlb::MMU_VS_SUM
            } else {
                tlb::MMU_VS
            }
        } else {
            tlb::MMU_VU
        }
    }

    fn hyp_translate(
        &mut self,
        va: u64,
        access: Access,
        hlvx: bool,
    ) -> Result<u64, GuestAccessFault> {
        let ctx = self.cpu.walk_ctx_for(self.guest_access_ctx(), hlvx);
        mmu::translate(&self.cpu.mem, &self.cpu.pmc, &ctx, va, access)
            .map(|t| t.hpa)
            .map_err(|f| match Trap::from_fault(f, va) {
                Trap::Exc {
                    cause, tval, gpa, ..
                } => GuestAccessFault { cause, tval, gpa },
                Trap::Pmc { hpa, va } => {
                    // A G-stage entry pointing outside the VM's grants means the VM plane's
                    // tables are corrupt: as for the guest's own accesses, report it and halt
                    // the VM (the access itself fails and reads nothing).
                    self.cpu.platform.emergency(Emergency::PmcViolation {
                        vmid: self.cpu.vmid,
                        vcpu: self.cpu.vcpu_id,
                        hpa,
                        va,
                    });
                    self.cpu
                        .platform
                        .halt_vm(self.cpu.vmid, HaltReason::PmcViolation { hpa, va });
                    GuestAccessFault {
                        cause: match access {
                            Access::Write => cause::STORE_ACCESS,
                            _ => cause::LOAD_ACCESS,
                        },
                        tval: va,
                        gpa: 0,
                    }
                }
            })
    }

    /// `hlv`: load `size` bytes (1, 2, 4, 8; zero-extended) from guest virtual address `va`
    /// with the guest's translation and the privilege in hustatus.SPVP.
    pub fn hlv(&mut self, va: u64, size: u64) -> Result<u64, GuestAccessFault> {
        self.hyp_load(va, size, false)
    }

    /// `hlvx`: like `hlv` but requires execute permission (reads instructions).
    pub fn hlvx(&mut self, va: u64, size: u64) -> Result<u64, GuestAccessFault> {
        self.hyp_load(va, size, true)
    }

    fn hyp_load(&mut self, va: u64, size: u64, hlvx: bool) -> Result<u64, GuestAccessFault> {
        assert!(matches!(size, 1 | 2 | 4 | 8), "bad access size");
        let mut v = 0;
        // Byte-wise translation keeps page-crossing accesses exact.
        let in_page = PAGE_SIZE - (va & (PAGE_SIZE - 1));
        let hpa = self.hyp_translate(va, Access::Read, hlvx)?;
        if size <= in_page {
            return Ok(self.cpu.mem.read_sized(hpa, size));
        }
        let hpa2 = self.hyp_translate(va.wrapping_add(in_page), Access::Read, hlvx)?;
        for i in 0..size {
            let a = if i < in_page {
                hpa + i
            } else {
                hpa2 + i - in_page
            };
            v |= self.cpu.mem.read_sized(a, 1) << (8 * i);
        }
        Ok(v)
    }

    /// `hsv`: store the low `size` bytes of `v` at guest virtual address `va`.
    pub fn hsv(&mut self, va: u64, size: u64, v: u64) -> Result<(), GuestAccessFault> {
        assert!(matches!(size, 1 | 2 | 4 | 8), "bad access size");
        let in_page = PAGE_SIZE - (va & (PAGE_SIZE - 1));
        let hpa = self.hyp_translate(va, Access::Write, false)?;
        let hpa2 = if size > in_page {
            Some(self.hyp_translate(va.wrapping_add(in_page), Access::Write, false)?)
        } else {
            None
        };
        for i in 0..size {
            let a = match hpa2 {
                Some(h2) if i >= in_page => h2 + i - in_page,
                _ => hpa + i,
            };
            self.cpu.mem.note_store(a, 1);
            self.cpu.mem.write_sized(a, 1, (v >> (8 * i)) & 0xff);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- huret

    /// `huret`: enter the guest at uepc, in VS-mode if hustatus.SPVP is set (else VU), and run
    /// it until the next exit that is not delegated to the guest.
    pub fn huret(&mut self) -> Exit {
        let me = std::thread::current().id();
        if self.thread != Some(me) {
            // Registered for doorbell wake-ups from WFI: once per thread, not per entry.
            *self
                .cpu
                .shared
                .thread
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current());
            self.thread = Some(me);
        }
        self.cpu.shared.in_guest.store(true, Ordering::SeqCst);
        self.cpu.pc = self.cpu.uepc;
        self.cpu.user = self.cpu.hstatus & HSTATUS_SPVP == 0;
        self.cpu.update_mmu_idx();
        self.cpu.poll = 0;
        self.running(true);
        let exit = self.run();
        self.running(false);
        self.cpu.shared.in_guest.store(false, Ordering::SeqCst);
        if !matches!(exit, Exit::Trap { .. }) {
            // Kicked or halted between instructions: resume point is the current pc.
            self.cpu.uepc = self.cpu.pc;
            let spvp = if self.cpu.user { 0 } else { HSTATUS_SPVP };
            self.cpu.hstatus = (self.cpu.hstatus & !HSTATUS_SPVP) | spvp;
        }
        exit
    }

    fn run(&mut self) -> Exit {
        // The block that just ran and its pc, while the block after it may be taken from its
        // link (`BlockCache::next`): it ran to its end and no service call came between.
        let mut from: Option<(u32, u64)> = None;
        loop {
            if self.cpu.poll == 0 || self.cpu.shared.req.load(Ordering::Relaxed) != 0 {
                from = None;
                if let Some(e) = self.service() {
                    return e;
                }
            }
            self.cpu.poll -= 1;
            let pc = self.cpu.pc;
            let from_here = from
                .take()
                .filter(|&(_, at)| (pc ^ at) >> PAGE_SHIFT == 0)
                .map(|(f, _)| f);
            let linked = from_here.and_then(|f| self.cache.next(f, pc, &self.cpu.mem));
            let idx = match linked {
                Some(i) => BlockRef::Cached(i),
                None => {
                    let flushes_before = self.cache.flushes;
                    match self.block_at(pc) {
                        Ok(b) => {
                            // Unless building this block emptied the cache.
                            if let (Some(f), BlockRef::Cached(i), true) =
                                (from_here, &b, self.cache.flushes == flushes_before)
                            {
                                self.cache.set_next(f, pc, *i);
                            }
                            b
                        }
                        Err(t) => {
                            if let Some(e) = self.cpu.raise(t, pc) {
                                return e;
                            }
                            continue;
                        }
                    }
                }
            };
            let flow = match idx {
                BlockRef::Cached(i) => match self.compiled(i) {
                    Some(f) => {
                        // Compiled or revalidated since the jump cache last saw it.
                        self.cache.remember(pc, i);
                        let (flow, last) = self.run_compiled(f, i, pc);
                        from = last;
                        flow
                    }
                    None => {
                        let insts: &[Inst] = &self.cache.get(i).insts;
                        let traps = self.cpu.traps;
                        let flow = self.cpu.exec_block(insts, pc);
                        if matches!(flow, Flow::Next)
                            && self.cpu.traps == traps
                            && block::chains(insts)
                        {
                            from = Some((i, pc));
                        }
                        flow
                    }
                },
                BlockRef::Single(inst) => self.cpu.exec_block(&[inst], pc),
            };
            match flow {
                Flow::Next => {}
                Flow::Exit(e) => return e,
                Flow::FenceI => self.cache.fence_i(),
                Flow::Wfi => self.wait_for_interrupt(),
                Flow::Pause => self.spin_hint(),
            }
        }
    }

    /// Block `i`'s compiled code, compiling it if it has become hot.
    #[inline(always)]
    fn compiled(&mut self, i: u32) -> Option<JitFn> {
        let jit = self.jit.as_mut()?;
        let b = self.cache.get_mut(i);
        if b.jit.is_some() {
            return b.jit;
        }
        if b.hits >= COMPILING {
            return None;
        }
        b.hits += 1;
        let t = jit.threshold;
        if b.hits < t {
            // Another vCPU running the same code may have had it compiled already: take that
            // code at an eighth of the threshold instead of interpreting up to it.
            if b.hits == (t / 8).max(1) {
                return self.adopt(i);
            }
            return None;
        }
        // Queued compilations may lag behind a burst of newly hot code; a block that keeps
        // running while it waits for room in the queue is compiled here once it has run
        // INLINE_AFTER times the threshold, if the compiler thread has stalled.
        if b.hits > t && b.hits % (t / 8).max(1) != 0 {
            return None;
        }
        let inline = b.hits >= t.saturating_mul(INLINE_AFTER);
        self.compile(i, inline)
    }

    /// Install code another hart compiled for block `i`'s region, if there is some.
    #[cold]
    #[inline(never)]
    fn adopt(&mut self, i: u32) -> Option<JitFn> {
        let jit = self.jit.as_mut()?;
        let b = self.cache.get(i);
        let (f, region) = jit.adopt(&self.cpu.mem, b.hpa, b.gen)?;
        let b = self.cache.get_mut(i);
        b.jit = Some(f);
        b.region = Some(region);
        b.jit
    }

    #[cold]
    #[inline(never)]
    fn compile(&mut self, i: u32, inline: bool) -> Option<JitFn> {
        let jit = self.jit.as_mut()?;
        let tag = {
            let b = self.cache.get(i);
            JobTag {
                block: i,
                hpa: b.hpa,
                gen: b.gen,
                flushes: self.cache.flushes,
                epoch: self.cache.epoch(),
            }
        };
        let mem = &self.cpu.mem;
        // Neighbours that ran a quarter as often as it takes to be compiled count as hot;
        // those with code of their own (or on the way) stay exits that the run loop chains
        // to, so a block is not compiled again into every region that reaches it (a 1-vCPU
        // boot compiled each block into ~4 regions; now ~2.3: 9.4 -> 5.3 MiB of code).
        let min = (jit.threshold / 4).max(1);
        let cache = &self.cache;
        let mut r = jit.compile(mem, tag, &cache.get(i).insts, inline, |h| {
            cache.joins_region(h, min)
        });
        if let Compiled::Full = r {
            self.cache.drop_compiled();
            jit.reset();
            let cache = &self.cache;
            r = jit.compile(mem, tag, &cache.get(i).insts, inline, |h| {
                cache.joins_region(h, min)
            });
        }
        let b = self.cache.get_mut(i);
        match r {
            Compiled::Code(f, region) => {
                b.jit = Some(f);
                b.region = Some(region);
            }
            Compiled::Queued => b.hits = COMPILING,
            // Counting on: tried again in a while, or compiled inline (see `compiled`).
            Compiled::Busy => {}
            Compiled::Stale => b.hits = 0,
            Compiled::Never | Compiled::Full => b.hits = NEVER_COMPILE,
        }
        b.jit
    }

    /// Install what the compiler thread finished, if the blocks are still as they were.
    #[cold]
    #[inline(never)]
    fn install_finished(&mut self) {
        let Some(jit) = self.jit.as_mut() else {
            return;
        };
        for f in jit.finished() {
            let t = f.tag;
            let waiting =
                t.flushes == self.cache.flushes && (t.block as usize) < self.cache.len() && {
                    let b = self.cache.get(t.block);
                    b.hpa == t.hpa && b.gen == t.gen && b.hits == COMPILING
                };
            if !waiting {
                continue; // the block was rebuilt or dropped meanwhile
            }
            // Code shared from another hart's request may predate this hart's last fence.i.
            let current = self.cpu.mem.code_gen(t.hpa) == t.gen
                && ((t.epoch == self.cache.epoch() && !f.shared)
                    || f.region.matches(&self.cpu.mem, t.hpa));
            let b = self.cache.get_mut(t.block);
            let Some(code) = f.code.filter(|_| current) else {
                if current {
                    jit.refused();
                    b.hits = NEVER_COMPILE;
                } else {
                    b.hits = 0;
                }
                continue;
            };
            match jit.install(&code, f.region, f.ns, t.hpa, f.shared) {
                Compiled::Code(func, region) => {
                    b.jit = Some(func);
                    b.region = Some(region);
                }
                _ => {
                    // Code space full: start over; this block is compiled again later.
                    self.cache.drop_compiled();
                    jit.reset();
                }
            }
        }
    }

    /// Run block `i`'s compiled code `f` at virtual address `pc`, and after it the compiled
    /// code of the blocks it continues at, as long as they are compiled and current and the
    /// block budget lasts: the run loop's bookkeeping is skipped between regions. After a
    /// normal end, also returns the last region's block and pc (its successor may come from
    /// its link, see `BlockCache::next`: regions change no translation without leaving with
    /// the budget spent).
    #[inline(always)]
    fn run_compiled(
        &mut self,
        mut f: JitFn,
        mut i: u32,
        mut pc: u64,
    ) -> (Flow, Option<(u32, u64)>) {
        let hpa = self.cache.get(i).hpa;
        let c = &self.cpu;
        // Everything but `x` and `cpu` points at heap allocations outside `Cpu` that do not
        // move while the VM exists.
        let mut env = JitEnv {
            tlb_read: c.tlb.table_ptr(c.mmu_idx, ACC_READ),
            tlb_write: c.tlb.table_ptr(c.mmu_idx, ACC_WRITE),
            code_flag_bias: JitEnv::code_flag_bias(&c.mem),
            pc0: pc,
            budget: c.poll as i64,
            page_gen: c.mem.code_gen_ptr(hpa),
            ..JitEnv::new()
        };
        let mut chained = 0u64;
        let r = loop {
            let cpu: *mut Cpu = &mut self.cpu;
            env.cpu = cpu;
            // SAFETY: a field of the live `*cpu`; the compiled code and the helpers are the
            // only users of the hart until the call returns.
            env.x = unsafe { std::ptr::addr_of_mut!((*cpu).x) }.cast();
            // SAFETY: `f` was compiled from block `i`, which is still current (checked just
            // now by the caller or by `next_compiled`), for exactly this environment layout;
            // regions change neither the translation context nor the TLB tables' addresses.
            let r = unsafe { f(&mut env) };
            if r & RET_TRAP != 0 {
                break r;
            }
            self.cpu.instret += r;
            pc = env.next_pc;
            env.budget -= 1;
            if env.budget <= 0 || self.cpu.shared.req.load(Ordering::Relaxed) != 0 {
                break 0;
            }
            // Most region exits continue on the same page, where the last successor is
            // remembered: no TLB, jump-cache or generation lookup (each a likely host cache
            // miss when the guest's code footprint is large).
            let same_page = (pc ^ env.pc0) >> PAGE_SHIFT == 0;
            if same_page {
                if let Some((g, j)) = self.cache.link(i, pc) {
                    chained += 1;
                    (f, i) = (g, j);
                    env.pc0 = pc;
                    continue;
                }
            }
            match self.next_compiled(pc) {
                Some((g, j, page_gen)) => {
                    chained += 1;
                    if same_page {
                        self.cache.set_link(i, pc, g, j);
                    }
                    (f, i) = (g, j);
                    env.pc0 = pc;
                    env.page_gen = page_gen;
                }
                None => break 0,
            }
        };
        self.cpu.poll = env.budget.max(0) as u32;
        if let Some(jit) = &mut self.jit {
            jit.stats.entered += 1;
            jit.stats.chained += chained;
        }
        if r & RET_TRAP == 0 {
            self.cpu.pc = pc;
            return (Flow::Next, Some((i, env.pc0)));
        }
        let pc = env.pc0;
        let (j, k) = (((r >> 16) & 0xffff) as usize, (r & 0xffff) as usize);
        if r & RET_FLOW != 0 {
            // The interpreter ran instruction k and it trapped: already raised.
            self.cpu.instret += env.retired + k as u64;
            let flow = self
                .cpu
                .jit_flow
                .take()
                .expect("a compiled region reported an interpreted trap without one");
            return (flow, None);
        }
        let trap = self
            .cpu
            .jit_trap
            .take()
            .expect("a compiled region reported a trap without one");
        let part = &self
            .cache
            .get(i)
            .region
            .as_ref()
            .expect("compiled region")
            .parts[j];
        let inst = part.insts[k];
        let at = pc
            .wrapping_add_signed(part.delta)
            .wrapping_add(inst.off as u64);
        self.cpu.instret += env.retired + k as u64;
        (self.cpu.trap_flow(trap, &inst, at), None)
    }

    /// The compiled code of the block at virtual `pc`, its index and its page's generation
    /// counter, if it is compiled and known current without further work (the TLB maps `pc`,
    /// the jump cache knows the block, and neither its page nor the fence.i epoch changed).
    #[inline(always)]
    fn next_compiled(&self, pc: u64) -> Option<(JitFn, u32, *const u32)> {
        let hpa = self.cpu.tlb_fetch_hit(pc)?;
        let (f, i) = self
            .cache
            .find_compiled(pc, hpa, self.cpu.mem.code_gen(hpa))?;
        Some((f, i, self.cpu.mem.code_gen_ptr(hpa)))
    }

    /// Block-boundary work: cross-thread requests, the timer, and interrupt delivery.
    fn service(&mut self) -> Option<Exit> {
        if self.jit.is_some() {
            self.install_finished();
        }
        let c = &mut self.cpu;
        c.poll = POLL_INTERVAL;
        let r = c.shared.req.swap(0, Ordering::SeqCst);
        // HALT is sticky (re-posted below), so the halt map is only read once halted.
        if r & req::HALT != 0 {
            c.shared.req.fetch_or(req::HALT, Ordering::SeqCst);
            let reason = c
                .platform
                .halt_reason(c.vmid)
                .unwrap_or(crate::exit::HaltReason::Stopped);
            return Some(Exit::Halted(reason));
        }
        if r & (req::FLUSH_VVMA | req::FLUSH_GVMA | req::FENCE_I) != 0 {
            let seq = c.shared.fence_seq.load(Ordering::SeqCst);
            if r & (req::FLUSH_VVMA | req::FLUSH_GVMA) != 0 {
                c.tlb.flush_all();
            }
            if r & req::FENCE_I != 0 {
                self.cache.fence_i();
            }
            c.shared.fence_done.fetch_max(seq, Ordering::SeqCst);
        }
        if r & req::KICK != 0 {
            return Some(Exit::Kicked);
        }
        // The Sstc comparator is re-read at most every CLOCK_INTERVAL instructions (and at once
        // when vstimecmp is written), which keeps the host clock off the exit path.
        if c.instret.wrapping_sub(c.clock_instret) >= CLOCK_INTERVAL {
            c.clock_instret = c.instret;
            c.update_vstip();
        }
        c.check_interrupts()
    }

    /// `pause`: the guest waits for another hart (a lock, an IPI's acknowledgement). When
    /// vCPUs outnumber host CPUs that hart may be waiting for this thread's CPU; so a spin
    /// that goes on (SPIN_YIELD_AFTER pauses, each within SPIN_GAP instructions of the last)
    /// gives it up. Yielding at every pause gave the CPU away to other host tasks as well:
    /// 4-vCPU boots on a loaded host took 2.90-5.63 s (median 4.83) against 2.87-3.76 s
    /// (3.00).
    #[cold]
    fn spin_hint(&mut self) {
        self.pauses += 1;
        if self.cpu.instret.wrapping_sub(self.spin_at) > SPIN_GAP {
            self.spin_run = 0;
        }
        self.spin_at = self.cpu.instret;
        self.spin_run += 1;
        if self.spin_run >= SPIN_YIELD_AFTER {
            self.spin_run = 0;
            self.pause_yields += 1;
            std::thread::yield_now();
        }
    }

    /// WFI: sleep until an interrupt is pending (enabled in hie/vsie, regardless of the global
    /// enable), a request arrives, or the timer fires.
    fn wait_for_interrupt(&mut self) {
        self.running(false);
        let c = &mut self.cpu;
        // Asleep, the hart runs no guest code, so a remote fence need not wait for it to wake
        // (on a host with fewer cores than vCPUs that took a scheduling round per fence): it
        // applies what was posted before its next block (`poll` 0 below), and the SeqCst
        // stores pair with the fence's post and load of `in_guest`.
        c.shared.in_guest.store(false, Ordering::SeqCst);
        loop {
            c.update_vstip();
            if c.pending_irqs() & c.hie != 0 || c.shared.req.load(Ordering::SeqCst) != 0 {
                break;
            }
            let mut sleep = Duration::from_millis(50);
            if c.henvcfg & ENVCFG_STCE != 0 && c.hie & MIP_VSTIP != 0 {
                let deadline = c.vstimecmp.wrapping_sub(c.htimedelta);
                sleep = sleep.min(c.platform.timebase.until(deadline));
            }
            std::thread::park_timeout(sleep);
        }
        c.shared.in_guest.store(true, Ordering::SeqCst);
        c.poll = 0;
        self.running(true);
    }

    /// Tell the VM's compiler pool whether this hart is running guest code (see
    /// `JitPool::cores_taken`).
    fn running(&self, running: bool) {
        if let Some(pool) = self.jit.as_ref().and_then(|j| j.pool()) {
            pool.hart_running(running);
        }
    }

    /// Find or build the block at virtual `pc`.
    #[inline(always)]
    fn block_at(&mut self, pc: u64) -> Result<BlockRef, Trap> {
        let hpa = self.cpu.fetch_hpa(pc)?;
        if let Some(i) = self.cache.find(pc, hpa) {
            let b = self.cache.get(i);
            // An unchanged generation also means the page is still marked as code: a store
            // clears the mark and bumps the generation together.
            if b.gen == self.cpu.mem.code_gen(hpa)
                && (b.epoch == self.cache.epoch() || self.cache.revalidate(i, &self.cpu.mem))
            {
                return Ok(BlockRef::Cached(i));
            }
        }
        self.build_block(pc, hpa)
    }

    #[cold]
    #[inline(never)]
    fn build_block(&mut self, pc: u64, hpa: u64) -> Result<BlockRef, Trap> {
        let gen = self.cpu.mem.mark_code(hpa);
        let insts = block::decode_block(&self.cpu.mem, hpa, |_| true);
        // Empty: the first instruction crosses the page, and is executed on its own.
        if insts.is_empty() {
            return self.page_crossing_inst(pc, hpa);
        }
        let block = Block {
            hpa,
            gen,
            epoch: self.cache.epoch(),
            insts: insts.into_boxed_slice(),
            hits: 0,
            jit: None,
            region: None,
            link: Link::NONE,
            next: Next::NONE,
        };
        let idx = self.cache.insert(pc, block);
        Ok(BlockRef::Cached(idx))
    }

    /// A 32-bit instruction whose second half lies on the next page: fetched through both
    /// translations and executed without caching.
    fn page_crossing_inst(&mut self, pc: u64, hpa: u64) -> Result<BlockRef, Trap> {
        let lo = self.cpu.mem.load_u16_unchecked(hpa) as u32;
        let hpa2 = self.cpu.fetch_hpa(pc.wrapping_add(2))?;
        let hi = self.cpu.mem.load_u16_unchecked(hpa2) as u32;
        Ok(BlockRef::Single(decode::decode(lo | hi << 16)))
    }
}

enum BlockRef {
    Cached(u32),
    Single(Inst),
}

//! The compiling tier: decoded blocks that run often become host code (Cranelift).
//!
//! The interpreter stays the reference and the fallback. A block is compiled once it has run
//! [`Jit::threshold`] times; the compiled function covers the block's instructions up to the
//! first one only the interpreter does (system instructions, the `cycle` and `instret`
//! counters; FP, atomics and other CSR accesses it has the interpreter run on the spot), and
//! returns to the run loop at the block's end exactly as the interpreter would (same `pc`,
//! same retired count, same trap), so everything outside the block (interrupts, instret,
//! exits) is shared.
//! Compiled code lives with its decoded block: when the block is rebuilt (its page was written
//! or fence.i found it stale) or dropped, the code goes with it.

mod arena;
mod pool;
mod region;
mod translate;

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilderContext;

use super::cpu::Cpu;
use super::inst::Inst;
use super::tlb::TlbEntry;
use crate::csr::{
    FCSR, FFLAGS, FRM, SCAUSE, SCOUNTEREN, SENVCFG, SEPC, SSCRATCH, SSTATUS, SSTATUS_MXR, STVAL,
    STVEC,
};
use crate::phys_mem::PhysMemory;
use arena::CodeArena;
pub use pool::{JitPool, JitPoolSettings};
pub(crate) use region::Region;

/// A compiled block.
pub(crate) type JitFn = unsafe extern "C" fn(*mut JitEnv) -> u64;

/// Bit of a compiled region's return value saying that instruction `ret & 0xffff` of part
/// `(ret >> 16) & 0xffff` raised the trap now in `Cpu::jit_trap`, after `JitEnv::retired`
/// instructions of earlier parts; otherwise the region ended normally, the return value is
/// the number of instructions retired and `JitEnv::next_pc` is where to continue.
pub(crate) const RET_TRAP: u64 = 1 << 63;
/// With [`RET_TRAP`]: the instruction was one the interpreter ran for the region, and how it
/// ended is in `Cpu::jit_flow` (instead of a trap in `Cpu::jit_trap`).
pub(crate) const RET_FLOW: u64 = 1 << 62;
/// [`csr_helper`]'s answer when the region must end after the CSR instruction.
pub(crate) const CSR_LEAVE: u64 = 2;

/// What a compiled block works on, set up by the run loop for each call.
#[repr(C)]
pub(crate) struct JitEnv {
    /// The guest integer registers (`Cpu::x`).
    pub x: *mut u64,
    /// TLB tables of the current translation context, for reads and writes.
    pub tlb_read: *const TlbEntry,
    pub tlb_write: *const TlbEntry,
    /// Where the per-page "holds decoded code" flag of guest physical memory is for host
    /// address `h`: at `code_flag_bias + (h >> PAGE_SHIFT)` (see [`JitEnv::code_flag_bias`]).
    pub code_flag_bias: usize,
    /// The hart, for the slow paths.
    pub cpu: *mut Cpu,
    /// Guest virtual address of the block.
    pub pc0: u64,
    /// In/out: blocks the region may still run before the run loop must look at requests,
    /// the timer and interrupts (`Cpu::poll`); a region counts one per return to an earlier
    /// or the same part. Signed: a region entered with none left takes one step into the
    /// negative and leaves at its first back edge.
    pub budget: i64,
    /// The code page's generation counter (changed: the page was written, leave).
    pub page_gen: *const u32,
    /// Out on a trap: instructions retired by the parts before the trapping one.
    pub retired: u64,
    /// Out: where to continue after a normal end.
    pub next_pc: u64,
    /// Out from the load helper: the value loaded.
    pub value: u64,
    /// The engine callbacks (see [`JitEnv::new`]).
    pub load_helper: usize,
    pub store_helper: usize,
    pub interp_helper: usize,
    pub csr_helper: usize,
}

impl JitEnv {
    /// The flags' address less the page number of the memory's (page-aligned) host base, so
    /// that compiled stores find a flag with one shift and one add.
    pub fn code_flag_bias(mem: &PhysMemory) -> usize {
        let base = mem.base_addr();
        debug_assert_eq!(base % crate::phys_mem::PAGE_SIZE as usize, 0);
        (mem.code_flags_ptr() as usize).wrapping_sub(base >> crate::phys_mem::PAGE_SHIFT)
    }

    /// An environment with the engine callbacks set and everything else null or zero.
    pub fn new() -> JitEnv {
        JitEnv {
            x: std::ptr::null_mut(),
            tlb_read: std::ptr::null(),
            tlb_write: std::ptr::null(),
            code_flag_bias: 0,
            cpu: std::ptr::null_mut(),
            pc0: 0,
            budget: 0,
            page_gen: std::ptr::null(),
            retired: 0,
            next_pc: 0,
            value: 0,
            load_helper: load_helper as *const () as usize,
            store_helper: store_helper as *const () as usize,
            interp_helper: interp_helper as *const () as usize,
            csr_helper: csr_helper as *const () as usize,
        }
    }
}

/// Default number of runs after which a block is compiled: hot loops reach it within
/// milliseconds, while most code a Linux boot runs never does (compiling a region costs about
/// a millisecond; measured on the Debian guest: 64 compiled 22k regions during boot, 1000 about
/// 4k, and boot got faster).
pub const DEFAULT_THRESHOLD: u32 = 1000;
/// Code space per hart. When it is full every compiled region is dropped and the space is
/// returned to the host, so this bounds the tier's memory: it is a cache, hot code is compiled
/// again within milliseconds. (A Linux boot and the benchmark's CPU workload on one vCPU
/// generated about 12 MiB of code in all, most of it for code that has gone cold, and 8 MiB
/// once compiled blocks stopped joining other regions; 16 MiB avoided two resets there and
/// saved ~10% of its time, but with 4 vCPUs the soak test's resident set grew by 34 MiB and
/// peaked at 313 MiB, over QEMU's.)
const ARENA_SIZE: usize = 6 << 20;

/// Counters for `--stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitStats {
    /// Regions compiled.
    pub compiled: u64,
    /// Blocks in them (a hot block and the blocks it jumps to on the same page).
    pub parts: u64,
    /// Bytes of host code generated (all of it, including code since thrown away).
    pub code_bytes: u64,
    /// Time spent compiling, in nanoseconds.
    pub compile_ns: u64,
    /// Times the code space filled up and every compiled block was dropped.
    pub resets: u64,
    /// Blocks Cranelift refused (left to the interpreter).
    pub failed: u64,
    /// Of `compiled`, regions the hart compiled on its own thread: a VM without a compiler
    /// thread compiles all here; with one, those that became hot while the VM's running harts
    /// took every host core, and those that waited for a stalled thread.
    pub inline: u64,
    /// Of `compiled`, regions whose code was copied from an earlier compilation (for another
    /// hart of the VM, or for this one before its code space was reset) instead of compiled.
    pub shared: u64,
    /// Times compiled code was entered from the run loop, and times a region went straight
    /// on into the next one (see `Hart::run_compiled`).
    pub entered: u64,
    pub chained: u64,
}

/// Outcome of [`Jit::compile`].
pub(crate) enum Compiled {
    Code(JitFn, Arc<Region>),
    /// Handed to the compiler thread; the result comes back through [`Jit::finished`].
    Queued,
    /// The page changed while the region was being decoded: try again later.
    Stale,
    /// The compiler thread's queue is full: try again later.
    Busy,
    /// The block starts with an instruction only the interpreter runs, or did not compile:
    /// do not try again.
    Never,
    /// The code space is full: drop every compiled block, then try again.
    Full,
}

/// Which block a background compilation is for, and the state it was decoded in (checked
/// again before the code is installed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct JobTag {
    pub block: u32,
    pub hpa: u64,
    pub gen: u32,
    pub flushes: u64,
    pub epoch: u32,
}

/// A background compilation's result.
pub(crate) struct Finished {
    pub tag: JobTag,
    pub region: Arc<Region>,
    /// The host code, or None if Cranelift refused the region.
    pub code: Option<Arc<[u8]>>,
    pub ns: u64,
    /// Compiled for another hart's request (the region may have been decoded before this
    /// hart's last fence.i).
    pub shared: bool,
}

/// Cranelift, set up for the host.
struct Compiler {
    isa: OwnedTargetIsa,
    ctx: Context,
    fctx: FunctionBuilderContext,
}

impl Compiler {
    fn new() -> Result<Compiler, String> {
        let mut flags = settings::builder();
        let set = |f: &mut settings::Builder, k: &str, v: &str| {
            f.set(k, v)
                .map_err(|e| format!("cranelift setting {k}={v}: {e}"))
        };
        // No e-graph pass: the translation already keeps guest registers in SSA values, and
        // the pass cost more host CPU than it saved. Compiling competes with the vCPUs when
        // they outnumber host cores (4-vCPU boot plus the bench's smp workload: 6.2 s of
        // compiling -> 4.5 s; smp 0.92 -> 0.79 s, boot4 3.79 -> 3.50 s, medians of 3).
        set(&mut flags, "opt_level", "none")?;
        set(
            &mut flags,
            "enable_verifier",
            if cfg!(debug_assertions) {
                "true"
            } else {
                "false"
            },
        )?;
        let isa = cranelift_native::builder()
            .map_err(|e| format!("no code generator for this host: {e}"))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| format!("code generator: {e}"))?;
        Ok(Compiler {
            isa,
            ctx: Context::new(),
            fctx: FunctionBuilderContext::new(),
        })
    }

    /// Host code for `region` (page generation `gen`), or None if Cranelift refused it.
    fn compile(&mut self, region: &Region, gen: u32) -> Option<Vec<u8>> {
        self.ctx.clear();
        translate::translate(
            &mut self.ctx.func,
            &mut self.fctx,
            self.isa.default_call_conv(),
            region,
            gen,
        );
        match self.ctx.compile(&*self.isa, &mut ControlPlane::default()) {
            // Helpers are called through addresses in the environment and no data is referenced,
            // so the code needs no relocation; refuse it if Cranelift thought otherwise.
            Ok(c) if c.buffer.relocs().is_empty() => Some(c.code_buffer().to_vec()),
            _ => None,
        }
    }
}

/// One hart's compiler and code space.
pub(crate) struct Jit {
    /// The VM's compiler thread and shared code; None: every region is compiled on the
    /// vCPU thread at once (deterministic: what the ISA tests use).
    pool: Option<JitPool>,
    /// Where the compiler thread sends this hart's results.
    reply: Sender<Finished>,
    done: Receiver<Finished>,
    /// Jobs queued and not yet collected by [`Jit::finished`] (the run loop polls the channel
    /// only while there are some: it showed in profiles otherwise).
    pending: usize,
    /// For compilations on the vCPU thread (created on first use).
    inline: Option<Box<Compiler>>,
    arena: CodeArena,
    /// `/tmp/perf-PID.map` when `DVEXT_PERF_MAP` is set: names each region for `perf report`.
    perf_map: Option<std::fs::File>,
    pub threshold: u32,
    pub stats: JitStats,
}

impl Jit {
    /// `pool`: compile on the VM's compiler thread and share code with its other harts.
    pub fn new(threshold: u32, pool: Option<&JitPool>) -> Result<Jit, String> {
        let arena = CodeArena::new(ARENA_SIZE)
            .map_err(|e| format!("code space for compiled blocks: {e}"))?;
        // Without a pool, set up now: a host Cranelift cannot serve fails here, not in the
        // guest (the pool's thread checked that already).
        let inline = match pool {
            None => Some(Box::new(Compiler::new()?)),
            Some(_) => None,
        };
        // Opened now: the VM plane's sandbox forbids opening files once the guest runs.
        let perf_map = std::env::var_os("DVEXT_PERF_MAP")
            .filter(|v| !v.is_empty())
            .map(|_| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(format!("/tmp/perf-{}.map", std::process::id()))
                    .map_err(|e| format!("DVEXT_PERF_MAP: /tmp/perf-PID.map: {e}"))
            })
            .transpose()?;
        let (reply, done) = channel();
        Ok(Jit {
            pool: pool.cloned(),
            reply,
            done,
            pending: 0,
            inline,
            arena,
            perf_map,
            threshold: threshold.max(1),
            stats: JitStats::default(),
        })
    }

    /// Compile (or queue for compiling) the region entered at the block `insts` at `tag.hpa`,
    /// whose page has generation `tag.gen` (checked by the caller just now).
    pub fn compile(
        &mut self,
        mem: &PhysMemory,
        tag: JobTag,
        insts: &[Inst],
        inline: bool,
        hot: impl Fn(u64) -> bool,
    ) -> Compiled {
        let t = Instant::now();
        let Some(region) = region::build(mem, tag.hpa, insts, hot) else {
            return Compiled::Never;
        };
        // A store to the page while it was being decoded: try again another time.
        if mem.code_gen(tag.hpa) != tag.gen {
            return Compiled::Stale;
        }
        let region = Arc::new(region);
        if let Some(c) = self.shared(mem, tag.hpa, tag.gen) {
            return c;
        }
        if let Some(pool) = self.pool.as_ref().filter(|p| !p.cores_taken()) {
            let job = pool::Job {
                tag,
                region: Arc::clone(&region),
                reply: self.reply.clone(),
            };
            if pool.try_send(job) {
                self.pending += 1;
                return Compiled::Queued;
            }
            // The queue is full. A block that has waited long (`inline`) is compiled here
            // only if the compiler thread is not getting through it.
            if !(inline && pool.stalled()) {
                return Compiled::Busy;
            }
        }
        let c = match &mut self.inline {
            Some(c) => c,
            None => match Compiler::new() {
                Ok(n) => self.inline.insert(Box::new(n)),
                Err(_) => return Compiled::Never,
            },
        };
        let Some(code) = c.compile(&region, tag.gen) else {
            self.stats.failed += 1;
            return Compiled::Never;
        };
        let ns = t.elapsed().as_nanos() as u64;
        self.stats.inline += 1;
        let code: Arc<[u8]> = code.into();
        if let Some(pool) = &self.pool {
            let sc = pool::SharedCode {
                gen: tag.gen,
                region: Arc::clone(&region),
                code: Arc::clone(&code),
            };
            pool.offer(tag.hpa, Arc::new(sc));
        }
        self.install(&code, region, ns, tag.hpa, false)
    }

    /// Install the code another hart (or this one, before a code-space reset) compiled for the
    /// region entered at `hpa` in a page of generation `gen`, if every instruction of it still
    /// matches memory.
    fn shared(&mut self, mem: &PhysMemory, hpa: u64, gen: u32) -> Option<Compiled> {
        let sc = self.pool.as_ref()?.lookup(hpa, gen)?;
        if !sc.region.matches(mem, hpa) {
            return None;
        }
        Some(self.install(&sc.code, Arc::clone(&sc.region), 0, hpa, true))
    }

    /// Shared code for the block at `hpa` (see [`Jit::shared`]), installed: its entry and
    /// region. None if there is none, or the code space is full (the block compiles later).
    pub fn adopt(&mut self, mem: &PhysMemory, hpa: u64, gen: u32) -> Option<(JitFn, Arc<Region>)> {
        match self.shared(mem, hpa, gen)? {
            Compiled::Code(f, region) => Some((f, region)),
            _ => None,
        }
    }

    /// Copy compiled code for `region` (entered at `hpa`) into the code space; `shared`: the
    /// code was compiled earlier, for another hart or before a code-space reset.
    pub fn install(
        &mut self,
        code: &[u8],
        region: Arc<Region>,
        ns: u64,
        hpa: u64,
        shared: bool,
    ) -> Compiled {
        let Some(addr) = self.arena.push(code) else {
            return Compiled::Full;
        };
        if let Some(f) = &mut self.perf_map {
            use std::io::Write;
            // One write per line: harts share the file, appending.
            let line = format!(
                "{addr:x} {:x} dvext-region-hpa-{hpa:x}-parts-{}\n",
                code.len(),
                region.parts.len()
            );
            let _ = f.write_all(line.as_bytes());
        }
        self.stats.compiled += 1;
        self.stats.shared += shared as u64;
        self.stats.code_bytes += code.len() as u64;
        self.stats.compile_ns += ns;
        self.stats.parts += region.parts.len() as u64;
        // SAFETY: `addr` holds a complete function Cranelift generated for the host with the
        // host's default (C) calling convention and the signature `fn(*mut JitEnv) -> u64`.
        let f = unsafe { std::mem::transmute::<usize, JitFn>(addr) };
        Compiled::Code(f, region)
    }

    /// Background compilations that have finished since the last call.
    pub fn finished(&mut self) -> Vec<Finished> {
        if self.pending == 0 {
            return Vec::new();
        }
        let done: Vec<Finished> = self.done.try_iter().collect();
        self.pending = self.pending.saturating_sub(done.len());
        done
    }

    /// A compilation Cranelift refused.
    pub fn refused(&mut self) {
        self.stats.failed += 1;
    }

    /// The VM's compiler pool, if it has one.
    pub fn pool(&self) -> Option<&JitPool> {
        self.pool.as_ref()
    }

    /// The descriptor this hart's compiled code is written through (see `arena`).
    pub fn code_fd(&self) -> std::os::fd::RawFd {
        self.arena.fd()
    }

    /// Forget all code: the caller has dropped every function pointer it handed out.
    pub fn reset(&mut self) {
        self.arena.reset();
        self.stats.resets += 1;
    }
}

/// A load the inline TLB path could not do (miss, misaligned, MMIO, fault).
///
/// # Safety
/// `env` is the run loop's live `JitEnv`, whose `cpu` points at the hart running the block.
unsafe extern "C" fn load_helper(env: *mut JitEnv, va: u64, size: u64) -> u64 {
    // SAFETY: per the contract above; the compiled code holds no reference into the hart
    // across this call, only the register-file pointer, which the slow path does not touch.
    let env = unsafe { &mut *env };
    let cpu = unsafe { &mut *env.cpu };
    match cpu.load_slow(va, size) {
        Ok(v) => {
            env.value = v;
            0
        }
        Err(t) => {
            cpu.jit_trap = Some(t);
            1
        }
    }
}

/// An instruction the region has the interpreter run (atomics, floating point).
///
/// # Safety
/// As for [`load_helper`]; `inst` points at an instruction of the running region.
unsafe extern "C" fn interp_helper(env: *mut JitEnv, inst: *const Inst, delta: i64) -> u64 {
    // SAFETY: as in `load_helper`; the region owns the instruction and outlives its code.
    let env = unsafe { &mut *env };
    let cpu = unsafe { &mut *env.cpu };
    let inst = unsafe { *inst };
    let (instret, traps) = (cpu.instret, cpu.traps);
    let flow = cpu.exec_block(
        std::slice::from_ref(&inst),
        env.pc0.wrapping_add_signed(delta),
    );
    if cpu.traps == traps && matches!(flow, super::exec::Flow::Next) {
        // Completed: the compiled code counts it (and sets pc) itself.
        cpu.instret = instret;
        return 0;
    }
    cpu.jit_flow = Some(flow);
    1
}

/// A CSR instruction in a region, run by the interpreter. Returns 0 to go on, 1 if it trapped
/// (as [`interp_helper`]), or [`CSR_LEAVE`] with the budget spent: the region ends after it and
/// the run loop looks at interrupts before the next instruction, because the access changed
/// what the region was entered under (the TLB tables of `sstatus.SUM`, `MXR`, `satp`) or may
/// have made an interrupt deliverable (`sie`, `sip`, `stimecmp`, or an `sstatus` write with
/// one pending, as when `spin_unlock_irqrestore` sets SIE again). The other CSRs a kernel
/// writes on its hot paths (`sscratch`, `sepc`, trap set-up, FP flags) change neither.
///
/// # Safety
/// As for [`interp_helper`].
unsafe extern "C" fn csr_helper(env: *mut JitEnv, inst: *const Inst, delta: i64) -> u64 {
    // SAFETY: as in `load_helper`; the references end before `interp_helper` runs.
    let (mmu_idx, status) = {
        let cpu = unsafe { &*(*env).cpu };
        (cpu.mmu_idx, cpu.vsstatus)
    };
    // SAFETY: the caller's contract is this function's.
    let st = unsafe { interp_helper(env, inst, delta) };
    if st != 0 {
        return st;
    }
    // SAFETY: as in `load_helper`; the region owns the instruction.
    let (env, inst) = unsafe { (&mut *env, &*inst) };
    let cpu = unsafe { &*env.cpu };
    let (csr, writes) = inst.csr_access().expect("a CSR instruction");
    let leave = match csr {
        SSTATUS => {
            cpu.mmu_idx != mmu_idx
                || (status ^ cpu.vsstatus) & SSTATUS_MXR != 0
                || (writes && cpu.interrupt_deliverable())
        }
        SSCRATCH | SEPC | SCAUSE | STVAL | STVEC | SCOUNTEREN | SENVCFG | FFLAGS | FRM | FCSR => {
            false
        }
        _ => writes,
    };
    if !leave {
        return 0;
    }
    env.budget = 0;
    CSR_LEAVE
}

/// A store the inline path could not do (also every store to a page with decoded code).
///
/// # Safety
/// As for [`load_helper`].
unsafe extern "C" fn store_helper(env: *mut JitEnv, va: u64, size: u64, v: u64) -> u64 {
    // SAFETY: as in `load_helper`.
    let env = unsafe { &mut *env };
    let cpu = unsafe { &mut *env.cpu };
    match cpu.store_slow(va, size, v) {
        Ok(()) => 0,
        Err(t) => {
            cpu.jit_trap = Some(t);
            1
        }
    }
}

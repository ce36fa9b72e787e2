//! The compiling tier: decoded blocks that run often become host code (Cranelift).
//!
//! The interpreter stays the reference and the fallback. A block is compiled once it has run
//! [`Jit::threshold`] times; the compiled function covers the block's instructions up to the
//! first one only the interpreter does (CSR, FP, AMO, system instructions), and returns to the
//! run loop at the block's end exactly as the interpreter would (same `pc`, same retired
//! count, same trap), so everything outside the block (interrupts, instret, exits) is shared.
//! Compiled code lives with its decoded block: when the block is rebuilt (its page was written
//! or fence.i found it stale) or dropped, the code goes with it.

mod arena;
mod translate;

use std::time::Instant;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilderContext;

use super::cpu::Cpu;
use super::inst::Inst;
use super::tlb::TlbEntry;
use arena::CodeArena;
use translate::Helpers;

/// A compiled block.
pub(crate) type JitFn = unsafe extern "C" fn(*mut JitEnv) -> u64;

/// Return value of a compiled block when instruction `ret & !RET_TRAP` raised the trap now in
/// `Cpu::jit_trap`; otherwise the block ended normally, the return value is the number of
/// instructions retired and `JitEnv::next_pc` is where to continue.
pub(crate) const RET_TRAP: u64 = 1 << 63;

/// What a compiled block works on, set up by the run loop for each call.
#[repr(C)]
pub(crate) struct JitEnv {
    /// The guest integer registers (`Cpu::x`).
    pub x: *mut u64,
    /// TLB tables of the current translation context, for reads and writes.
    pub tlb_read: *const TlbEntry,
    pub tlb_write: *const TlbEntry,
    /// Per-page "holds decoded code" flags of guest physical memory, and the host address of
    /// that memory (to turn a TLB host address into a page number).
    pub code_flags: *const u8,
    pub mem_base: usize,
    /// The hart, for the slow paths.
    pub cpu: *mut Cpu,
    /// Guest virtual address of the block.
    pub pc0: u64,
    /// Out: where to continue after a normal end.
    pub next_pc: u64,
    /// Out from the load helper: the value loaded.
    pub value: u64,
}

/// Default number of runs after which a block is compiled: often enough that hot loops are
/// compiled at once, rarely enough that code run a few times at boot is not worth compiling.
pub const DEFAULT_THRESHOLD: u32 = 64;
/// Code space per hart (virtual; pages are only backed once code is written to them).
const ARENA_SIZE: usize = 64 << 20;

/// Counters for `--stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitStats {
    /// Blocks compiled.
    pub compiled: u64,
    /// Bytes of host code generated (all of it, including code since thrown away).
    pub code_bytes: u64,
    /// Time spent compiling, in nanoseconds.
    pub compile_ns: u64,
    /// Times the code space filled up and every compiled block was dropped.
    pub resets: u64,
    /// Blocks Cranelift refused (left to the interpreter).
    pub failed: u64,
}

/// Outcome of [`Jit::compile`].
pub(crate) enum Compiled {
    Code(JitFn),
    /// The block starts with an instruction only the interpreter runs, or did not compile:
    /// do not try again.
    Never,
    /// The code space is full: drop every compiled block, then try again.
    Full,
}

/// One hart's compiler and code space.
pub(crate) struct Jit {
    isa: OwnedTargetIsa,
    ctx: Context,
    fctx: FunctionBuilderContext,
    arena: CodeArena,
    pub threshold: u32,
    pub stats: JitStats,
}

impl Jit {
    pub fn new(threshold: u32) -> Result<Jit, String> {
        let mut flags = settings::builder();
        let set = |f: &mut settings::Builder, k: &str, v: &str| {
            f.set(k, v).map_err(|e| format!("cranelift setting {k}={v}: {e}"))
        };
        set(&mut flags, "opt_level", &std::env::var("DVX_OPT").unwrap_or("speed".into()))?;
        set(
            &mut flags,
            "enable_verifier",
            if cfg!(debug_assertions) { "true" } else { "false" },
        )?;
        let isa = cranelift_native::builder()
            .map_err(|e| format!("no code generator for this host: {e}"))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| format!("code generator: {e}"))?;
        let arena =
            CodeArena::new(ARENA_SIZE).map_err(|e| format!("code space for compiled blocks: {e}"))?;
        Ok(Jit {
            ctx: Context::new(),
            fctx: FunctionBuilderContext::new(),
            isa,
            arena,
            threshold: threshold.max(1),
            stats: JitStats::default(),
        })
    }

    /// Compile a block's instructions.
    pub fn compile(&mut self, insts: &[Inst]) -> Compiled {
        let t = Instant::now();
        self.ctx.clear();
        let helpers = Helpers {
            load: load_helper as *const () as usize,
            store: store_helper as *const () as usize,
        };
        let n = translate::translate(
            &mut self.ctx.func,
            &mut self.fctx,
            self.isa.default_call_conv(),
            insts,
            helpers,
        );
        if n == 0 {
            return Compiled::Never;
        }
        let code = match self.ctx.compile(&*self.isa, &mut ControlPlane::default()) {
            // Helpers are called through addresses in registers and no data is referenced,
            // so the code needs no relocation; refuse it if Cranelift thought otherwise.
            Ok(c) if c.buffer.relocs().is_empty() => c.code_buffer(),
            _ => {
                self.stats.failed += 1;
                return Compiled::Never;
            }
        };
        let Some(addr) = self.arena.push(code) else {
            return Compiled::Full;
        };
        self.stats.compiled += 1;
        self.stats.code_bytes += code.len() as u64;
        self.stats.compile_ns += t.elapsed().as_nanos() as u64;
        // SAFETY: `addr` holds a complete function Cranelift generated for the host with the
        // host's default (C) calling convention and the signature `fn(*mut JitEnv) -> u64`.
        Compiled::Code(unsafe { std::mem::transmute::<usize, JitFn>(addr) })
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

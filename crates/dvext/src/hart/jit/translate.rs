//! Decoded block -> Cranelift IR.
//!
//! The generated function takes a [`JitEnv`] and runs the block's instructions: guest integer
//! registers are loaded from the register file where a part first reads them and stored back
//! where the engine may look at them (see [`Tx::write`]), loads and stores look the software
//! TLB up inline and call back into the engine only on a miss, a store to a page holding
//! decoded code, or a misaligned access.
//! Those calls, the trap exits and the ways out when the block budget is spent are cold
//! blocks, laid out after the hot code: a guest's hot loop can run through hundreds of
//! regions, and keeping their hot paths dense measurably sped up such loops (a variant that
//! added instructions to every region exit was slower despite doing less work elsewhere).
//! Everything else the interpreter does at block ends (instret, interrupts, traps) stays in
//! Rust: the function returns how the block ended and the run loop carries on from there.

use cranelift_codegen::entity::EntityRef;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I16, I32, I64, I8};
use cranelift_codegen::ir::{
    AbiParam, Block as IrBlock, Function, InstBuilder, MemFlags, Signature, Type, Value,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};

use super::region::Region;
use super::{JitEnv, RET_FLOW, RET_TRAP};
use crate::csr::{CYCLE, TIME};
use crate::hart::inst::{Inst, Op, X0_SINK};
use crate::hart::tlb::{TlbEntry, TLB_BITS};
use crate::phys_mem::PAGE_SHIFT;

/// Whether the compiled tier implements `op` (anything else ends the compiled prefix).
pub(crate) fn supported(op: Op) -> bool {
    use Op::*;
    matches!(
        op,
        Lui | Auipc
            | Jal
            | Jalr
            | Beq
            | Bne
            | Blt
            | Bge
            | Bltu
            | Bgeu
            | Lb
            | Lh
            | Lw
            | Ld
            | Lbu
            | Lhu
            | Lwu
            | Sb
            | Sh
            | Sw
            | Sd
            | Addi
            | Slti
            | Sltiu
            | Xori
            | Ori
            | Andi
            | Slli
            | Srli
            | Srai
            | Add
            | Sub
            | Sll
            | Slt
            | Sltu
            | Xor
            | Srl
            | Sra
            | Or
            | And
            | Addiw
            | Slliw
            | Srliw
            | Sraiw
            | Addw
            | Subw
            | Sllw
            | Srlw
            | Sraw
            | Mul
            | Mulh
            | Mulhsu
            | Mulhu
            | Div
            | Divu
            | Rem
            | Remu
            | Mulw
            | Divw
            | Divuw
            | Remw
            | Remuw
            | Fence
    )
}

/// Whether a region may contain `inst` by having the interpreter run it on the spot (atomics,
/// floating point): everything that neither has a compiled form nor ends a block.
pub(crate) fn interpreted_inline(inst: &Inst) -> bool {
    !supported(inst.op) && !inst.ends_block()
}

/// Whether `inst` is a CSR access a region may end its part with (the engine runs it, see
/// `csr_helper`). Not the `cycle` and `instret` counters: they count the region's retired
/// instructions, which only the region knows until it returns.
pub(crate) fn compiled_csr(inst: &Inst) -> bool {
    inst.csr_access()
        .is_some_and(|(csr, _)| csr == TIME || !(CYCLE..=CYCLEH_LAST).contains(&csr))
}

/// Last of the user-level counter CSRs (`cycle`..`hpmcounter31h`).
const CYCLEH_LAST: u16 = 0xC9F;

/// Whether a region may contain `inst`.
pub(crate) fn compilable(inst: &Inst) -> bool {
    supported(inst.op) || interpreted_inline(inst) || compiled_csr(inst)
}

/// Memory flags for the engine's own structures and guest RAM: never null, aligned where the
/// TLB says so; no trapping accesses are generated.
fn flags() -> MemFlags {
    MemFlags::trusted()
}

fn off(field: usize) -> i32 {
    field as i32
}

/// The engine callbacks compiled code calls (see [`JitEnv`]).
#[derive(Clone, Copy)]
enum Helper {
    Load,
    Store,
    Interp,
    Csr,
}

struct Tx<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    env: Value,
    x_base: Value,
    /// The block's guest virtual address, a run-time value: blocks are shared by every
    /// virtual alias of their physical page, so no guest address is baked into the code.
    pc0v: Value,
    region: &'a Region,
    /// The part being emitted, and its instructions.
    part: usize,
    insts: &'a [Inst],
    /// First IR block of each part.
    heads: Vec<IrBlock>,
    /// Instructions retired by the parts run before the current one (a variable: loops).
    retired: Variable,
    /// The code page's generation when the region was decoded.
    gen: u32,
    helper_sig: [cranelift_codegen::ir::SigRef; 2],
    /// The shared trap exit (parameter: index of the trapping instruction), once needed.
    trap_exit: Option<IrBlock>,
    /// Guest registers as values of the current part (None: not read or written in it yet).
    /// Each part starts afresh from the register file: values carried across parts, which
    /// loops join from several places, made every register live everywhere, so Cranelift
    /// spilled (and took long to allocate) what a load from the register file gives as fast.
    regs: [Option<Value>; 32],
    /// Registers (bit per register) written in this part and not yet stored to the register
    /// file (see [`Tx::write`]).
    dirty: u32,
}

impl Tx<'_, '_> {
    /// `pc0 + delta` as a value.
    fn pc_plus(&mut self, delta: i64) -> Value {
        self.b.ins().iadd_imm(self.pc0v, delta)
    }

    /// A guest register: the value this part last wrote or read, else loaded from the
    /// register file.
    fn read(&mut self, r: u8) -> Value {
        if r == 0 || r == X0_SINK {
            return self.b.ins().iconst(I64, 0);
        }
        let r = r as usize;
        if let Some(v) = self.regs[r] {
            return v;
        }
        let v = self.b.ins().load(I64, flags(), self.x_base, off(r * 8));
        self.regs[r] = Some(v);
        v
    }

    /// A register written is stored to the register file only where something may read it
    /// there: before the engine runs an instruction for the region, before a memory access
    /// (which may trap), and wherever the part ends. So a register written several times in
    /// between is stored once: in the hot part of sha256sum's round loop (44 instructions,
    /// two loads) 43 register writes became 13 stores.
    fn write(&mut self, r: u8, v: Value) {
        if r != 0 && r != X0_SINK {
            self.regs[r as usize] = Some(v);
            self.dirty |= 1 << r;
        }
    }

    /// Store every register written and not stored yet: from here on the register file is
    /// current.
    fn flush(&mut self) {
        while self.dirty != 0 {
            let r = self.dirty.trailing_zeros() as usize;
            self.dirty &= self.dirty - 1;
            let v = self.regs[r].expect("a written register has a value");
            self.b.ins().store(flags(), v, self.x_base, off(r * 8));
        }
    }

    /// Leave the function after `k` instructions of the current part, continuing at `next`.
    /// Every way there has flushed the registers (the run loop reads the register file).
    fn leave(&mut self, next: Value, k: usize) {
        debug_assert_eq!(self.dirty, 0, "leaving with registers not stored");
        self.set_env_field(std::mem::offset_of!(JitEnv, next_pc), next);
        let before = self.b.use_var(self.retired);
        let r = self.b.ins().iadd_imm(before, k as i64);
        self.b.ins().return_(&[r]);
    }

    fn env_field(&mut self, ty: Type, field: usize) -> Value {
        self.b.ins().load(ty, flags(), self.env, off(field))
    }

    fn set_env_field(&mut self, field: usize, v: Value) {
        self.b.ins().store(flags(), v, self.env, off(field));
    }

    /// Continue at `delta` bytes from the region's entry after `k` instructions of the
    /// current part: inside the region if that is one of its parts (and, going back to an
    /// earlier or the same part, the block budget lasts), else leave. Cross-thread requests
    /// are not checked here: the budget bounds how long they wait (the run loop checks them
    /// between regions). Nor is the page's code generation: only this hart's slow-path stores
    /// can change it while the region runs ([`Tx::leave_if_written`]); a store from another
    /// hart or a device is seen by the next region entry, within the budget, as in the
    /// interpreter.
    fn goto(&mut self, delta: i64, k: usize) {
        // Both ways out (the next part, or leaving) need the register file current.
        self.flush();
        let Some(m) = self.region.find(delta) else {
            let t = self.pc_plus(delta);
            self.leave(t, k);
            return;
        };
        // Forward (parts are numbered in the order they were found) needs no budget check:
        // every loop through the region's parts goes back to an earlier or the same part at
        // least once, where it is checked. Checking it on every move between parts put a
        // chain of memory updates of the budget on each loop iteration (gzip's match loop:
        // three, each waiting on the last).
        let out = (m <= self.part).then(|| {
            let out = self.b.create_block();
            // Taken once per budget or when the page was written: out of the hot path's way.
            self.b.set_cold_block(out);
            let budget = self.env_field(I64, std::mem::offset_of!(JitEnv, budget));
            let budget = self.b.ins().iadd_imm(budget, -1);
            self.set_env_field(std::mem::offset_of!(JitEnv, budget), budget);
            // Signed: the block that entered the region may have spent the last of the budget.
            let more = self.b.ins().icmp_imm(IntCC::SignedGreaterThan, budget, 0);
            let c1 = self.b.create_block();
            self.b.ins().brif(more, c1, &[], out, &[]);
            self.b.switch_to_block(c1);
            self.b.seal_block(c1);
            out
        });
        let before = self.b.use_var(self.retired);
        let now = self.b.ins().iadd_imm(before, k as i64);
        self.b.def_var(self.retired, now);
        self.b.ins().jump(self.heads[m], &[]);

        if let Some(out) = out {
            self.b.switch_to_block(out);
            self.b.seal_block(out);
            let t = self.pc_plus(delta);
            self.leave(t, k);
        }
    }

    /// Call `helper` (the interpreter or the CSR helper) to run instruction `i` of the
    /// current part; returns its status.
    fn run_in_engine(&mut self, helper: Helper, i: usize) -> Value {
        // The engine reads and writes the register file.
        self.flush();
        let ptr = self
            .b
            .ins()
            .iconst(I64, &self.insts[i] as *const Inst as i64);
        // The part's start: the interpreter adds the instruction's own offset.
        let delta = self.b.ins().iconst(I64, self.region.parts[self.part].delta);
        self.call_helper(helper, &[self.env, ptr, delta])
    }

    /// Have the interpreter run instruction `i`; leave if it trapped, else pick up the
    /// register it may have written.
    fn interpret(&mut self, i: usize) {
        let inst = &self.insts[i];
        let st = self.run_in_engine(Helper::Interp, i);
        let ok = self.b.create_block();
        self.trap_code_if(st, RET_FLOW | (self.part as u64) << 16 | i as u64, ok);
        self.b.switch_to_block(ok);
        self.b.seal_block(ok);
        // An atomic or FP store may have written this page's code (arithmetic cannot: no
        // check for it).
        if inst.writes_memory() {
            self.leave_if_written(i);
        }
        // Integer destinations were written to the register file; an FP destination's number
        // reloads an integer register that is current in memory anyway (stored before the
        // call).
        let rd = inst.rd as usize;
        if rd < 32 {
            self.regs[rd] = None;
        }
    }

    /// CSR instruction `i`, the last of its part: the engine runs it; then the region goes on
    /// at the next instruction, unless the engine says the access changed what the region
    /// runs under (see `csr_helper`): then it leaves, budget spent.
    fn csr(&mut self, i: usize) {
        let st = self.run_in_engine(Helper::Csr, i);
        let trapped = self.b.ins().icmp_imm(IntCC::Equal, st, 1);
        let ok = self.b.create_block();
        self.trap_code_if(trapped, RET_FLOW | (self.part as u64) << 16 | i as u64, ok);
        self.b.switch_to_block(ok);
        self.b.seal_block(ok);
        // The helper has spent the budget itself.
        self.leave_after_if(st, i, false);
        let next = self.after(i);
        self.goto(next, i + 1);
    }

    /// After instruction `i` went through the engine (a slow-path store, an interpreted
    /// atomic): if it wrote this region's page, leave after it with the budget spent, so what
    /// runs next is decoded from memory again (the interpreter sees such a store from its next
    /// block on).
    fn leave_if_written(&mut self, i: usize) {
        let gen_ptr = self.env_field(I64, std::mem::offset_of!(JitEnv, page_gen));
        let gen = self.b.ins().load(I32, flags(), gen_ptr, 0);
        let changed = self
            .b
            .ins()
            .icmp_imm(IntCC::NotEqual, gen, self.gen as i32 as i64);
        // No budget left: the run loop looks up what comes next afresh instead of following
        // a link between regions (`BlockCache::link`), which assumes the page is unchanged.
        self.leave_after_if(changed, i, true);
    }

    /// Leave after instruction `i` of the current part if `cond` is nonzero (a cold path),
    /// with the budget spent first if `spend`; else carry on here.
    fn leave_after_if(&mut self, cond: Value, i: usize, spend: bool) {
        let go_on = self.b.create_block();
        let out = self.b.create_block();
        self.b.set_cold_block(out);
        self.b.ins().brif(cond, out, &[], go_on, &[]);
        self.b.switch_to_block(out);
        self.b.seal_block(out);
        if spend {
            let zero = self.b.ins().iconst(I64, 0);
            self.set_env_field(std::mem::offset_of!(JitEnv, budget), zero);
        }
        let t = self.pc_plus(self.after(i));
        self.leave(t, i + 1);
        self.b.switch_to_block(go_on);
        self.b.seal_block(go_on);
    }

    /// Offset from the region's entry of the instruction after instruction `i` of the
    /// current part.
    fn after(&self, i: usize) -> i64 {
        let inst = &self.insts[i];
        self.region.parts[self.part].delta + inst.off as i64 + inst.len() as i64
    }

    /// Branch to the trap exit if `status` (a helper's result) is nonzero, else to `ok`.
    fn trap_if(&mut self, status: Value, i: usize, ok: IrBlock) {
        self.trap_code_if(status, (self.part as u64) << 16 | i as u64, ok);
    }

    fn trap_code_if(&mut self, status: Value, what: u64, ok: IrBlock) {
        let exit = *self.trap_exit.get_or_insert_with(|| {
            let blk = self.b.create_block();
            self.b.set_cold_block(blk);
            self.b.append_block_param(blk, I64);
            blk
        });
        let idx = self.b.ins().iconst(I64, (RET_TRAP | what) as i64);
        self.b.ins().brif(status, exit, &[idx.into()], ok, &[]);
    }

    /// Fill in the trap exit: record the instructions retired by earlier parts and return
    /// which instruction trapped (the engine left the trap in the hart's trap slot).
    fn finish_trap_exit(&mut self) {
        if let Some(blk) = self.trap_exit {
            self.b.switch_to_block(blk);
            self.b.seal_block(blk);
            let before = self.b.use_var(self.retired);
            self.set_env_field(std::mem::offset_of!(JitEnv, retired), before);
            let r = self.b.block_params(blk)[0];
            self.b.ins().return_(&[r]);
        }
    }

    /// `env.<tlb field>` entry for `va`: (entry address, hit?) for an access of `size` bytes.
    fn tlb_probe(&mut self, table_field: usize, va: Value, size: u64) -> (Value, Value) {
        let ins = self.b.ins();
        let table = ins.load(I64, flags(), self.env, off(table_field));
        // Byte offset of slot `(va >> PAGE_SHIFT) & mask` in one shift and one mask (the
        // code generator is not asked to strength-reduce the multiply).
        const ENTRY_SHIFT: u32 = std::mem::size_of::<TlbEntry>().trailing_zeros();
        const _: () = assert!(std::mem::size_of::<TlbEntry>() == 1 << ENTRY_SHIFT);
        const _: () = assert!(ENTRY_SHIFT <= PAGE_SHIFT);
        let byte_off = self.b.ins().ushr_imm(va, (PAGE_SHIFT - ENTRY_SHIFT) as i64);
        let byte_off = self
            .b
            .ins()
            .band_imm(byte_off, (((1u64 << TLB_BITS) - 1) << ENTRY_SHIFT) as i64);
        let entry = self.b.ins().iadd(table, byte_off);
        let tag = self.b.ins().load(
            I64,
            flags(),
            entry,
            off(std::mem::offset_of!(TlbEntry, tag)),
        );
        let mask = !((1u64 << PAGE_SHIFT) - 1) | (size - 1);
        let key = self.b.ins().band_imm(va, mask as i64);
        let hit = self.b.ins().icmp(IntCC::Equal, tag, key);
        (entry, hit)
    }

    fn host_addr(&mut self, entry: Value, va: Value) -> Value {
        let addend = self.b.ins().load(
            I64,
            flags(),
            entry,
            off(std::mem::offset_of!(TlbEntry, addend)),
        );
        self.b.ins().iadd(va, addend)
    }

    fn call_helper(&mut self, which: Helper, args: &[Value]) -> Value {
        use std::mem::offset_of;
        // Read from the environment at the call: an address constant would be hoisted and
        // held in a callee-saved register across the whole function, forcing spills.
        let (field, sig) = match which {
            Helper::Load => (offset_of!(JitEnv, load_helper), self.helper_sig[0]),
            Helper::Store => (offset_of!(JitEnv, store_helper), self.helper_sig[1]),
            Helper::Interp => (offset_of!(JitEnv, interp_helper), self.helper_sig[0]),
            Helper::Csr => (offset_of!(JitEnv, csr_helper), self.helper_sig[0]),
        };
        let callee = self.env_field(I64, field);
        let call = self.b.ins().call_indirect(sig, callee, args);
        self.b.inst_results(call)[0]
    }

    /// Load `size` bytes at `va`, zero-extended to 64 bits.
    fn load(&mut self, i: usize, va: Value, size: u64) -> Value {
        // The access may trap, after which the register file must be current. Stored on the
        // main path: copies on every slow path made regions 12% larger and slower to compile.
        self.flush();
        let (entry, hit) = self.tlb_probe(std::mem::offset_of!(JitEnv, tlb_read), va, size);
        let fast = self.b.create_block();
        let slow = self.b.create_block();
        let join = self.b.create_block();
        self.b.set_cold_block(slow);
        self.b.append_block_param(join, I64);
        self.b.ins().brif(hit, fast, &[], slow, &[]);

        self.b.switch_to_block(fast);
        self.b.seal_block(fast);
        let host = self.host_addr(entry, va);
        let v = match size {
            1 => self.b.ins().uload8(I64, flags(), host, 0),
            2 => self.b.ins().uload16(I64, flags(), host, 0),
            4 => self.b.ins().uload32(flags(), host, 0),
            _ => self.b.ins().load(I64, flags(), host, 0),
        };
        self.b.ins().jump(join, &[v.into()]);

        self.b.switch_to_block(slow);
        self.b.seal_block(slow);
        let sz = self.b.ins().iconst(I64, size as i64);
        let st = self.call_helper(Helper::Load, &[self.env, va, sz]);
        let ok = self.b.create_block();
        self.b.set_cold_block(ok);
        self.trap_if(st, i, ok);
        self.b.switch_to_block(ok);
        self.b.seal_block(ok);
        let v = self.b.ins().load(
            I64,
            flags(),
            self.env,
            off(std::mem::offset_of!(JitEnv, value)),
        );
        self.b.ins().jump(join, &[v.into()]);

        self.b.switch_to_block(join);
        self.b.seal_block(join);
        self.b.block_params(join)[0]
    }

    fn store(&mut self, i: usize, va: Value, size: u64, v: Value) {
        self.flush();
        let (entry, hit) = self.tlb_probe(std::mem::offset_of!(JitEnv, tlb_write), va, size);
        let probe = self.b.create_block();
        let fast = self.b.create_block();
        let slow = self.b.create_block();
        let join = self.b.create_block();
        self.b.set_cold_block(slow);
        self.b.ins().brif(hit, probe, &[], slow, &[]);

        // A page holding decoded code goes the slow way, which invalidates the code.
        self.b.switch_to_block(probe);
        self.b.seal_block(probe);
        let host = self.host_addr(entry, va);
        let page = self.b.ins().ushr_imm(host, PAGE_SHIFT as i64);
        let bias = self.env_field(I64, std::mem::offset_of!(JitEnv, code_flag_bias));
        let flag_addr = self.b.ins().iadd(bias, page);
        let is_code = self.b.ins().uload8(I32, flags(), flag_addr, 0);
        self.b.ins().brif(is_code, slow, &[], fast, &[]);

        self.b.switch_to_block(fast);
        self.b.seal_block(fast);
        match size {
            1 => {
                self.b.ins().istore8(flags(), v, host, 0);
            }
            2 => {
                self.b.ins().istore16(flags(), v, host, 0);
            }
            4 => {
                self.b.ins().istore32(flags(), v, host, 0);
            }
            _ => {
                self.b.ins().store(flags(), v, host, 0);
            }
        }
        self.b.ins().jump(join, &[]);

        self.b.switch_to_block(slow);
        self.b.seal_block(slow);
        let sz = self.b.ins().iconst(I64, size as i64);
        let st = self.call_helper(Helper::Store, &[self.env, va, sz, v]);
        let ok = self.b.create_block();
        self.b.set_cold_block(ok);
        self.trap_if(st, i, ok);
        self.b.switch_to_block(ok);
        self.b.seal_block(ok);
        self.leave_if_written(i);
        self.b.ins().jump(join, &[]);

        self.b.switch_to_block(join);
        self.b.seal_block(join);
    }

    fn sext_from(&mut self, v: Value, ty: Type) -> Value {
        let n = self.b.ins().ireduce(ty, v);
        self.b.ins().sextend(I64, n)
    }

    fn sext32(&mut self, v: Value) -> Value {
        self.sext_from(v, I32)
    }

    fn bool64(&mut self, cc: IntCC, a: Value, b: Value) -> Value {
        let c = self.b.ins().icmp(cc, a, b);
        self.b.ins().uextend(I64, c)
    }

    /// Signed division or remainder with RISC-V's results for a zero divisor and overflow.
    fn sdivrem(&mut self, a: Value, b: Value, ty: Type, rem: bool) -> Value {
        let zero = self.b.ins().icmp_imm(IntCC::Equal, b, 0);
        let min = if ty == I32 { i32::MIN as i64 } else { i64::MIN };
        let a_min = self.b.ins().icmp_imm(IntCC::Equal, a, min);
        let b_m1 = self.b.ins().icmp_imm(IntCC::Equal, b, -1);
        let ovf = self.b.ins().band(a_min, b_m1);
        let bad = self.b.ins().bor(zero, ovf);
        let one = self.b.ins().iconst(ty, 1);
        // Divisor 1 on overflow gives the right answers: MIN / 1 = MIN, MIN % 1 = 0.
        let safe = self.b.ins().select(bad, one, b);
        if rem {
            let r = self.b.ins().srem(a, safe);
            self.b.ins().select(zero, a, r)
        } else {
            let q = self.b.ins().sdiv(a, safe);
            let all = self.b.ins().iconst(ty, -1);
            self.b.ins().select(zero, all, q)
        }
    }

    fn udivrem(&mut self, a: Value, b: Value, ty: Type, rem: bool) -> Value {
        let zero = self.b.ins().icmp_imm(IntCC::Equal, b, 0);
        let one = self.b.ins().iconst(ty, 1);
        let safe = self.b.ins().select(zero, one, b);
        if rem {
            let r = self.b.ins().urem(a, safe);
            self.b.ins().select(zero, a, r)
        } else {
            let q = self.b.ins().udiv(a, safe);
            let all = self.b.ins().iconst(ty, -1);
            self.b.ins().select(zero, all, q)
        }
    }

    fn lo32(&mut self, v: Value) -> Value {
        self.b.ins().ireduce(I32, v)
    }

    /// Emit instruction `i`. Returns false if it ended the function (a control transfer).
    fn inst(&mut self, i: usize) -> bool {
        let inst = self.insts[i];
        // Offset from the region's entry.
        let at = self.region.parts[self.part].delta + inst.off as i64;
        let next_seq = self.after(i);
        let imm = inst.imm as i64;
        use Op::*;
        match inst.op {
            Lui => {
                let v = self.b.ins().iconst(I64, imm);
                self.write(inst.rd, v);
            }
            Auipc => {
                let v = self.pc_plus(at.wrapping_add(imm));
                self.write(inst.rd, v);
            }
            Jal => {
                let link = self.pc_plus(next_seq);
                self.write(inst.rd, link);
                self.goto(at.wrapping_add(imm), i + 1);
                return false;
            }
            Jalr => {
                let base = self.read(inst.rs1);
                let t = self.b.ins().iadd_imm(base, imm);
                let t = self.b.ins().band_imm(t, !1);
                let link = self.pc_plus(next_seq);
                self.write(inst.rd, link);
                self.flush();
                self.leave(t, i + 1);
                return false;
            }
            Beq | Bne | Blt | Bge | Bltu | Bgeu => {
                let cc = match inst.op {
                    Beq => IntCC::Equal,
                    Bne => IntCC::NotEqual,
                    Blt => IntCC::SignedLessThan,
                    Bge => IntCC::SignedGreaterThanOrEqual,
                    Bltu => IntCC::UnsignedLessThan,
                    _ => IntCC::UnsignedGreaterThanOrEqual,
                };
                let (a, b) = (self.read(inst.rs1), self.read(inst.rs2));
                let c = self.b.ins().icmp(cc, a, b);
                // Once, before the paths split (each goes on through `goto`).
                self.flush();
                let taken = self.b.create_block();
                let not = self.b.create_block();
                self.b.ins().brif(c, taken, &[], not, &[]);
                for (blk, delta) in [(taken, at.wrapping_add(imm)), (not, next_seq)] {
                    self.b.switch_to_block(blk);
                    self.b.seal_block(blk);
                    self.goto(delta, i + 1);
                }
                return false;
            }
            Lb | Lh | Lw | Ld | Lbu | Lhu | Lwu => {
                let base = self.read(inst.rs1);
                let va = self.b.ins().iadd_imm(base, imm);
                let (size, signed) = match inst.op {
                    Lb => (1, Some(I8)),
                    Lh => (2, Some(I16)),
                    Lw => (4, Some(I32)),
                    Ld => (8, None),
                    Lbu => (1, None),
                    Lhu => (2, None),
                    _ => (4, None),
                };
                let mut v = self.load(i, va, size);
                if let Some(ty) = signed {
                    v = self.sext_from(v, ty);
                }
                self.write(inst.rd, v);
            }
            Sb | Sh | Sw | Sd => {
                let base = self.read(inst.rs1);
                let va = self.b.ins().iadd_imm(base, imm);
                let v = self.read(inst.rs2);
                let size = match inst.op {
                    Sb => 1,
                    Sh => 2,
                    Sw => 4,
                    _ => 8,
                };
                self.store(i, va, size, v);
            }
            _ if interpreted_inline(&inst) => self.interpret(i),
            _ if compiled_csr(&inst) => {
                self.csr(i);
                return false;
            }
            Fence => {
                let pred = (inst.raw >> 24) & 0xf;
                let succ = (inst.raw >> 20) & 0xf;
                // Only W->R ordering needs an instruction on the (TSO) host.
                if pred & 0b0101 != 0 && succ & 0b1010 != 0 {
                    self.b.ins().fence();
                }
            }
            _ => {
                let v = self.alu(&inst);
                self.write(inst.rd, v);
            }
        }
        true
    }

    fn alu(&mut self, inst: &Inst) -> Value {
        use Op::*;
        let imm = inst.imm as i64;
        let a = self.read(inst.rs1);
        let b = self.read(inst.rs2);
        let sh = imm & 63;
        match inst.op {
            Addi => self.b.ins().iadd_imm(a, imm),
            Slti => {
                let c = self.b.ins().icmp_imm(IntCC::SignedLessThan, a, imm);
                self.b.ins().uextend(I64, c)
            }
            Sltiu => {
                let c = self.b.ins().icmp_imm(IntCC::UnsignedLessThan, a, imm);
                self.b.ins().uextend(I64, c)
            }
            Xori => self.b.ins().bxor_imm(a, imm),
            Ori => self.b.ins().bor_imm(a, imm),
            Andi => self.b.ins().band_imm(a, imm),
            Slli => self.b.ins().ishl_imm(a, sh),
            Srli => self.b.ins().ushr_imm(a, sh),
            Srai => self.b.ins().sshr_imm(a, sh),
            Add => self.b.ins().iadd(a, b),
            Sub => self.b.ins().isub(a, b),
            Sll => self.b.ins().ishl(a, b),
            Slt => self.bool64(IntCC::SignedLessThan, a, b),
            Sltu => self.bool64(IntCC::UnsignedLessThan, a, b),
            Xor => self.b.ins().bxor(a, b),
            Srl => self.b.ins().ushr(a, b),
            Sra => self.b.ins().sshr(a, b),
            Or => self.b.ins().bor(a, b),
            And => self.b.ins().band(a, b),
            Addiw => {
                let s = self.b.ins().iadd_imm(a, imm);
                self.sext32(s)
            }
            Slliw | Srliw | Sraiw => {
                let a = self.lo32(a);
                let s = imm & 31;
                let r = match inst.op {
                    Slliw => self.b.ins().ishl_imm(a, s),
                    Srliw => self.b.ins().ushr_imm(a, s),
                    _ => self.b.ins().sshr_imm(a, s),
                };
                self.b.ins().sextend(I64, r)
            }
            Addw => {
                let s = self.b.ins().iadd(a, b);
                self.sext32(s)
            }
            Subw => {
                let s = self.b.ins().isub(a, b);
                self.sext32(s)
            }
            Sllw | Srlw | Sraw => {
                let a = self.lo32(a);
                let b = self.lo32(b);
                // Cranelift takes a 32-bit shift amount modulo 32, as RISC-V does.
                let r = match inst.op {
                    Sllw => self.b.ins().ishl(a, b),
                    Srlw => self.b.ins().ushr(a, b),
                    _ => self.b.ins().sshr(a, b),
                };
                self.b.ins().sextend(I64, r)
            }
            Mul => self.b.ins().imul(a, b),
            Mulh => self.b.ins().smulhi(a, b),
            Mulhu => self.b.ins().umulhi(a, b),
            Mulhsu => {
                // high(a_signed * b_unsigned) = high(a_u * b) - (a < 0 ? b : 0)
                let hi = self.b.ins().umulhi(a, b);
                let neg = self.b.ins().icmp_imm(IntCC::SignedLessThan, a, 0);
                let zero = self.b.ins().iconst(I64, 0);
                let t = self.b.ins().select(neg, b, zero);
                self.b.ins().isub(hi, t)
            }
            Div => self.sdivrem(a, b, I64, false),
            Rem => self.sdivrem(a, b, I64, true),
            Divu => self.udivrem(a, b, I64, false),
            Remu => self.udivrem(a, b, I64, true),
            Mulw => {
                let p = self.b.ins().imul(a, b);
                self.sext32(p)
            }
            Divw | Remw | Divuw | Remuw => {
                let a = self.lo32(a);
                let b = self.lo32(b);
                let r = match inst.op {
                    Divw => self.sdivrem(a, b, I32, false),
                    Remw => self.sdivrem(a, b, I32, true),
                    Divuw => self.udivrem(a, b, I32, false),
                    _ => self.udivrem(a, b, I32, true),
                };
                self.b.ins().sextend(I64, r)
            }
            op => unreachable!("{op:?} is not an ALU operation the compiler supports"),
        }
    }
}

/// Build `func` for `region`, whose code page had generation `gen` when it was decoded.
pub(crate) fn translate(
    func: &mut Function,
    fctx: &mut FunctionBuilderContext,
    call_conv: CallConv,
    region: &Region,
    gen: u32,
) {
    let mut sig = Signature::new(call_conv);
    sig.params.push(AbiParam::new(I64));
    sig.returns.push(AbiParam::new(I64));
    func.signature = sig;

    let mut b = FunctionBuilder::new(func, fctx);
    let mut helper_sig = |nargs: usize| {
        let mut s = Signature::new(call_conv);
        for _ in 0..nargs {
            s.params.push(AbiParam::new(I64));
        }
        s.returns.push(AbiParam::new(I64));
        b.import_signature(s)
    };
    let load_sig = helper_sig(3);
    let store_sig = helper_sig(4);

    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let env = b.block_params(entry)[0];
    let retired = Variable::new(0);
    b.declare_var(retired, I64);
    let zero = b.ins().iconst(I64, 0);
    b.def_var(retired, zero);
    let x_base = b
        .ins()
        .load(I64, flags(), env, off(std::mem::offset_of!(JitEnv, x)));
    let pc0v = b
        .ins()
        .load(I64, flags(), env, off(std::mem::offset_of!(JitEnv, pc0)));
    let heads: Vec<IrBlock> = region.parts.iter().map(|_| b.create_block()).collect();
    b.ins().jump(heads[0], &[]);
    let mut tx = Tx {
        b: &mut b,
        env,
        x_base,
        pc0v,
        region,
        part: 0,
        insts: &region.parts[0].insts,
        heads,
        retired,
        gen,
        helper_sig: [load_sig, store_sig],
        trap_exit: None,
        regs: [None; 32],
        dirty: 0,
    };
    for (j, part) in region.parts.iter().enumerate() {
        tx.part = j;
        tx.insts = &part.insts;
        tx.regs = [None; 32];
        debug_assert_eq!(tx.dirty, 0, "a part ended with registers not stored");
        tx.b.switch_to_block(tx.heads[j]);
        let n = part.insts.len();
        let mut open = true;
        for i in 0..n {
            if !tx.inst(i) {
                open = false;
                break;
            }
        }
        if open {
            // The part went on past what was compiled (page end, length limit, or an
            // instruction only the interpreter runs): continue after the last one.
            let next = tx.after(n - 1);
            tx.goto(next, n);
        }
    }
    // Jumps into parts come from anywhere in the function: seal once all are emitted.
    for &h in &tx.heads {
        tx.b.seal_block(h);
    }
    tx.finish_trap_exit();
    b.finalize();
}

//! The interpreter: executes one decoded block against the architectural state.

use std::sync::atomic::{fence, AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering};

use super::cpu::Cpu;
use super::fpu::{self, Rm};
use super::inst::{Inst, Op};
use super::trap::{transformed_inst, Trap};
use crate::csr::*;
use crate::exit::Exit;

/// What the run loop must do after a block.
pub(crate) enum Flow {
    /// Continue at `cpu.pc`.
    Next,
    /// Return this exit from `huret`.
    Exit(Exit),
    /// fence.i: drop decoded blocks, then continue.
    FenceI,
    /// WFI: sleep until an interrupt is pending, then continue.
    Wfi,
    /// `pause`: the guest is spinning; continue after letting other host threads run.
    Pause,
}

const NAN_BOX: u64 = 0xffff_ffff_0000_0000;

#[inline(always)]
fn sext32(v: u64) -> u64 {
    v as i32 as i64 as u64
}

impl Cpu {
    /// Read a single-precision operand, unboxing (improperly boxed values read as the
    /// canonical NaN).
    #[inline(always)]
    fn fs(&self, r: u8) -> u32 {
        let v = self.f[(r & 31) as usize];
        if v & NAN_BOX == NAN_BOX {
            v as u32
        } else {
            fpu::CANONICAL_NAN_S
        }
    }

    #[inline(always)]
    fn fws(&mut self, r: u8, v: u32) {
        self.f[(r & 31) as usize] = NAN_BOX | v as u64;
        self.fs_dirty();
    }

    #[inline(always)]
    fn fd(&self, r: u8) -> u64 {
        self.f[(r & 31) as usize]
    }

    #[inline(always)]
    fn fwd(&mut self, r: u8, v: u64) {
        self.f[(r & 31) as usize] = v;
        self.fs_dirty();
    }

    #[inline(always)]
    fn accrue(&mut self, flags: u8) {
        if flags != 0 {
            self.fflags |= flags;
            self.fs_dirty();
        }
    }

    /// Effective rounding mode of an FP instruction (None: reserved -> illegal).
    #[inline(always)]
    fn rm(&self, inst: &Inst) -> Option<Rm> {
        Rm::from_bits(if inst.rm == 7 { self.frm } else { inst.rm })
    }

    /// Route a trap raised by `inst` at `pc`.
    #[cold]
    #[inline(never)]
    pub(crate) fn trap_flow(&mut self, mut trap: Trap, inst: &Inst, pc: u64) -> Flow {
        self.traps += 1;
        if let Trap::Exc { cause, htinst, .. } = &mut trap {
            if matches!(
                *cause,
                cause::LOAD_GUEST_PAGE_FAULT | cause::STORE_GUEST_PAGE_FAULT
            ) && *htinst == 0
            {
                *htinst = transformed_inst(inst);
            }
        }
        self.pc = pc;
        match self.raise(trap, pc) {
            None => Flow::Next,
            Some(e) => Flow::Exit(e),
        }
    }

    /// Execute `insts`, the block found at virtual address `pc0`.
    pub fn exec_block(&mut self, insts: &[Inst], pc0: u64) -> Flow {
        let base = insts.as_ptr() as usize;
        for inst in insts.iter() {
            // The instruction's address, computed only where it is used.
            macro_rules! pc {
                () => {
                    pc0.wrapping_add(inst.off as u64)
                };
            }
            // Index of `inst` in the block, derived from its address only on the paths that
            // leave the block (an enumerate() counter is a loop-carried value the compiler
            // keeps on the stack in this large function).
            let i = (inst as *const Inst as usize - base) / std::mem::size_of::<Inst>();
            macro_rules! trap {
                ($t:expr) => {{
                    self.instret += i as u64;
                    return self.trap_flow($t, inst, pc!());
                }};
            }
            macro_rules! tr {
                ($e:expr) => {
                    match $e {
                        Ok(v) => v,
                        Err(t) => trap!(t),
                    }
                };
            }
            macro_rules! jump {
                ($target:expr) => {{
                    self.pc = $target;
                    self.instret += i as u64 + 1;
                    return Flow::Next;
                }};
            }
            macro_rules! branch {
                ($cond:expr) => {{
                    let target = if $cond {
                        pc!().wrapping_add(inst.imm as i64 as u64)
                    } else {
                        pc!().wrapping_add(inst.len())
                    };
                    jump!(target)
                }};
            }
            macro_rules! fp_on {
                () => {
                    if self.fs_off() {
                        trap!(Trap::illegal(inst))
                    }
                };
            }
            macro_rules! rm {
                () => {
                    match self.rm(inst) {
                        Some(r) => r,
                        None => trap!(Trap::illegal(inst)),
                    }
                };
            }
            macro_rules! amo {
                ($at:ty, $t:ty, $size:expr, |$a:ident, $v:ident| $body:expr) => {{
                    let va = self.xr(inst.rs1);
                    let h = tr!(self.amo_host(va, $size));
                    let $v = self.xr(inst.rs2) as $t;
                    // SAFETY: `amo_host` returns a naturally aligned host address inside the
                    // arena, for a page the PMC approved with write permission.
                    let $a = unsafe { <$at>::from_ptr(h as *mut $t) };
                    let old = $body;
                    self.xw(inst.rd, old as i64 as u64);
                }};
            }
            macro_rules! fop_s {
                (|$a:ident, $b:ident, $rm:ident, $fl:ident| $body:expr) => {{
                    fp_on!();
                    let $rm = rm!();
                    let ($a, $b) = (self.fs(inst.rs1), self.fs(inst.rs2));
                    let mut $fl = 0u8;
                    let r = $body;
                    self.accrue($fl);
                    self.fws(inst.rd, r);
                }};
            }
            macro_rules! fop_d {
                (|$a:ident, $b:ident, $rm:ident, $fl:ident| $body:expr) => {{
                    fp_on!();
                    let $rm = rm!();
                    let ($a, $b) = (self.fd(inst.rs1), self.fd(inst.rs2));
                    let mut $fl = 0u8;
                    let r = $body;
                    self.accrue($fl);
                    self.fwd(inst.rd, r);
                }};
            }
            macro_rules! fcmp {
                ($get:ident, $f:path) => {{
                    fp_on!();
                    let mut fl = 0u8;
                    let r = $f(self.$get(inst.rs1), self.$get(inst.rs2), &mut fl);
                    self.accrue(fl);
                    self.xw(inst.rd, r as u64);
                }};
            }
            macro_rules! fcvt_to_int {
                ($get:ident, $f:path, $ext:expr) => {{
                    fp_on!();
                    let r = rm!();
                    let mut fl = 0u8;
                    let v = $f(self.$get(inst.rs1), r, &mut fl);
                    self.accrue(fl);
                    self.xw(inst.rd, $ext(v));
                }};
            }
            macro_rules! fcvt_from_int {
                ($put:ident, $f:path, $arg:expr) => {{
                    fp_on!();
                    let r = rm!();
                    let mut fl = 0u8;
                    let x = self.xr(inst.rs1);
                    let v = $f($arg(x), r, &mut fl);
                    self.accrue(fl);
                    self.$put(inst.rd, v);
                }};
            }
            macro_rules! fma {
                ($get:ident, $put:ident, $f:path, $np:expr, $na:expr) => {{
                    fp_on!();
                    let r = rm!();
                    let mut fl = 0u8;
                    let v = $f(
                        self.$get(inst.rs1),
                        self.$get(inst.rs2),
                        self.$get(inst.rs3),
                        $np,
                        $na,
                        r,
                        &mut fl,
                    );
                    self.accrue(fl);
                    self.$put(inst.rd, v);
                }};
            }

            let rs1 = self.xr(inst.rs1);
            let rs2 = self.xr(inst.rs2);
            let imm = inst.imm as i64 as u64;
            match inst.op {
                Op::Illegal => trap!(Trap::illegal(inst)),
                Op::Lui => self.xw(inst.rd, imm),
                Op::Auipc => self.xw(inst.rd, pc!().wrapping_add(imm)),
                Op::Jal => {
                    self.xw(inst.rd, pc!().wrapping_add(inst.len()));
                    jump!(pc!().wrapping_add(imm))
                }
                Op::Jalr => {
                    let target = rs1.wrapping_add(imm) & !1;
                    self.xw(inst.rd, pc!().wrapping_add(inst.len()));
                    jump!(target)
                }
                Op::Beq => branch!(rs1 == rs2),
                Op::Bne => branch!(rs1 != rs2),
                Op::Blt => branch!((rs1 as i64) < rs2 as i64),
                Op::Bge => branch!(rs1 as i64 >= rs2 as i64),
                Op::Bltu => branch!(rs1 < rs2),
                Op::Bgeu => branch!(rs1 >= rs2),

                Op::Lb => {
                    let v = tr!(self.load_u8(rs1.wrapping_add(imm)));
                    self.xw(inst.rd, v as i8 as i64 as u64)
                }
                Op::Lh => {
                    let v = tr!(self.load_u16(rs1.wrapping_add(imm)));
                    self.xw(inst.rd, v as i16 as i64 as u64)
                }
                Op::Lw => {
                    let v = tr!(self.load_u32(rs1.wrapping_add(imm)));
                    self.xw(inst.rd, v as i32 as i64 as u64)
                }
                Op::Ld => {
                    let v = tr!(self.load_u64(rs1.wrapping_add(imm)));
                    self.xw(inst.rd, v)
                }
                Op::Lbu => {
                    let v = tr!(self.load_u8(rs1.wrapping_add(imm)));
                    self.xw(inst.rd, v as u64)
                }
                Op::Lhu => {
                    let v = tr!(self.load_u16(rs1.wrapping_add(imm)));
                    self.xw(inst.rd, v as u64)
                }
                Op::Lwu => {
                    let v = tr!(self.load_u32(rs1.wrapping_add(imm)));
                    self.xw(inst.rd, v as u64)
                }
                Op::Sb => tr!(self.store_u8(rs1.wrapping_add(imm), rs2 as u8)),
                Op::Sh => tr!(self.store_u16(rs1.wrapping_add(imm), rs2 as u16)),
                Op::Sw => tr!(self.store_u32(rs1.wrapping_add(imm), rs2 as u32)),
                Op::Sd => tr!(self.store_u64(rs1.wrapping_add(imm), rs2)),

                Op::Addi => self.xw(inst.rd, rs1.wrapping_add(imm)),
                Op::Slti => self.xw(inst.rd, ((rs1 as i64) < imm as i64) as u64),
                Op::Sltiu => self.xw(inst.rd, (rs1 < imm) as u64),
                Op::Xori => self.xw(inst.rd, rs1 ^ imm),
                Op::Ori => self.xw(inst.rd, rs1 | imm),
                Op::Andi => self.xw(inst.rd, rs1 & imm),
                Op::Slli => self.xw(inst.rd, rs1 << (imm & 63)),
                Op::Srli => self.xw(inst.rd, rs1 >> (imm & 63)),
                Op::Srai => self.xw(inst.rd, ((rs1 as i64) >> (imm & 63)) as u64),
                Op::Add => self.xw(inst.rd, rs1.wrapping_add(rs2)),
                Op::Sub => self.xw(inst.rd, rs1.wrapping_sub(rs2)),
                Op::Sll => self.xw(inst.rd, rs1 << (rs2 & 63)),
                Op::Slt => self.xw(inst.rd, ((rs1 as i64) < rs2 as i64) as u64),
                Op::Sltu => self.xw(inst.rd, (rs1 < rs2) as u64),
                Op::Xor => self.xw(inst.rd, rs1 ^ rs2),
                Op::Srl => self.xw(inst.rd, rs1 >> (rs2 & 63)),
                Op::Sra => self.xw(inst.rd, ((rs1 as i64) >> (rs2 & 63)) as u64),
                Op::Or => self.xw(inst.rd, rs1 | rs2),
                Op::And => self.xw(inst.rd, rs1 & rs2),
                Op::Addiw => self.xw(inst.rd, sext32(rs1.wrapping_add(imm))),
                Op::Slliw => self.xw(inst.rd, sext32(((rs1 as u32) << (imm & 31)) as u64)),
                Op::Srliw => self.xw(inst.rd, sext32(((rs1 as u32) >> (imm & 31)) as u64)),
                Op::Sraiw => self.xw(inst.rd, ((rs1 as i32) >> (imm & 31)) as i64 as u64),
                Op::Addw => self.xw(inst.rd, sext32(rs1.wrapping_add(rs2))),
                Op::Subw => self.xw(inst.rd, sext32(rs1.wrapping_sub(rs2))),
                Op::Sllw => self.xw(inst.rd, sext32(((rs1 as u32) << (rs2 & 31)) as u64)),
                Op::Srlw => self.xw(inst.rd, sext32(((rs1 as u32) >> (rs2 & 31)) as u64)),
                Op::Sraw => self.xw(inst.rd, ((rs1 as i32) >> (rs2 & 31)) as i64 as u64),

                Op::Mul => self.xw(inst.rd, rs1.wrapping_mul(rs2)),
                Op::Mulh => self.xw(
                    inst.rd,
                    ((rs1 as i64 as i128 * rs2 as i64 as i128) >> 64) as u64,
                ),
                Op::Mulhsu => self.xw(
                    inst.rd,
                    ((rs1 as i64 as i128).wrapping_mul(rs2 as i128) >> 64) as u64,
                ),
                Op::Mulhu => self.xw(inst.rd, ((rs1 as u128 * rs2 as u128) >> 64) as u64),
                Op::Div => {
                    let (a, b) = (rs1 as i64, rs2 as i64);
                    let q = if b == 0 { -1 } else { a.wrapping_div(b) };
                    self.xw(inst.rd, q as u64)
                }
                Op::Divu => self.xw(inst.rd, rs1.checked_div(rs2).unwrap_or(u64::MAX)),
                Op::Rem => {
                    let (a, b) = (rs1 as i64, rs2 as i64);
                    let r = if b == 0 { a } else { a.wrapping_rem(b) };
                    self.xw(inst.rd, r as u64)
                }
                Op::Remu => self.xw(inst.rd, if rs2 == 0 { rs1 } else { rs1 % rs2 }),
                Op::Mulw => self.xw(inst.rd, sext32(rs1.wrapping_mul(rs2))),
                Op::Divw => {
                    let (a, b) = (rs1 as i32, rs2 as i32);
                    let q = if b == 0 { -1 } else { a.wrapping_div(b) };
                    self.xw(inst.rd, q as i64 as u64)
                }
                Op::Divuw => {
                    let (a, b) = (rs1 as u32, rs2 as u32);
                    self.xw(inst.rd, sext32(a.checked_div(b).unwrap_or(u32::MAX) as u64))
                }
                Op::Remw => {
                    let (a, b) = (rs1 as i32, rs2 as i32);
                    let r = if b == 0 { a } else { a.wrapping_rem(b) };
                    self.xw(inst.rd, r as i64 as u64)
                }
                Op::Remuw => {
                    let (a, b) = (rs1 as u32, rs2 as u32);
                    self.xw(inst.rd, sext32(if b == 0 { a } else { a % b } as u64))
                }

                Op::Fence => {
                    // Only W->R ordering is weaker on the host (TSO) than a plain access
                    // sequence; other fences need no instruction.
                    let pred = (inst.raw >> 24) & 0xf;
                    let succ = (inst.raw >> 20) & 0xf;
                    if pred & 0b0101 != 0 && succ & 0b1010 != 0 {
                        fence(Ordering::SeqCst);
                    } else {
                        fence(Ordering::AcqRel);
                    }
                }
                Op::FenceI => {
                    self.pc = pc!().wrapping_add(inst.len());
                    self.instret += i as u64 + 1;
                    return Flow::FenceI;
                }
                Op::Pause => {
                    self.pc = pc!().wrapping_add(inst.len());
                    self.instret += i as u64 + 1;
                    return Flow::Pause;
                }
                Op::Ecall => {
                    let c = if self.user {
                        cause::ECALL_U
                    } else {
                        cause::ECALL_VS
                    };
                    trap!(Trap::exc(c, 0))
                }
                Op::Ebreak => trap!(Trap::exc(cause::BREAKPOINT, pc!())),
                Op::Sret => {
                    if self.user || self.hstatus & HSTATUS_VTSR != 0 {
                        trap!(Trap::virtual_inst(inst))
                    }
                    let s = self.vsstatus;
                    self.user = s & SSTATUS_SPP == 0;
                    let mut n = s & !(SSTATUS_SIE | SSTATUS_SPP);
                    if s & SSTATUS_SPIE != 0 {
                        n |= SSTATUS_SIE;
                    }
                    self.vsstatus = n | SSTATUS_SPIE;
                    self.update_mmu_idx();
                    self.resv = None;
                    self.poll = 0;
                    jump!(self.vsepc)
                }
                Op::Mret => trap!(Trap::illegal(inst)),
                Op::Wfi => {
                    if self.user || self.hstatus & HSTATUS_VTW != 0 {
                        trap!(Trap::virtual_inst(inst))
                    }
                    self.pc = pc!().wrapping_add(inst.len());
                    self.instret += i as u64 + 1;
                    return Flow::Wfi;
                }
                Op::SfenceVma => {
                    if self.user || self.hstatus & HSTATUS_VTVM != 0 {
                        trap!(Trap::virtual_inst(inst))
                    }
                    if inst.rs1 == 0 {
                        self.tlb.flush_all();
                    } else {
                        self.tlb.flush_va(rs1);
                    }
                    jump!(pc!().wrapping_add(inst.len()))
                }
                Op::HypervisorOnly => trap!(Trap::virtual_inst(inst)),
                Op::Csrrw | Op::Csrrs | Op::Csrrc | Op::Csrrwi | Op::Csrrsi | Op::Csrrci => {
                    // instret/cycle must count the instructions of this block retired before
                    // the CSR access (instret is otherwise only updated at block ends).
                    self.instret += i as u64;
                    let r = self.exec_csr(inst);
                    self.instret -= i as u64;
                    tr!(r);
                    jump!(pc!().wrapping_add(inst.len()))
                }

                Op::LrW | Op::LrD => {
                    let size = if inst.op == Op::LrW { 4 } else { 8 };
                    if rs1 & (size - 1) != 0 {
                        trap!(Trap::exc(cause::LOAD_MISALIGNED, rs1))
                    }
                    let v = if size == 4 {
                        tr!(self.load_u32(rs1)) as i32 as i64 as u64
                    } else {
                        tr!(self.load_u64(rs1))
                    };
                    self.resv = Some((rs1, size, v));
                    self.xw(inst.rd, v);
                }
                Op::ScW | Op::ScD => {
                    let size = if inst.op == Op::ScW { 4 } else { 8 };
                    let h = tr!(self.amo_host(rs1, size));
                    let ok = match self.resv.take() {
                        Some((a, s, old)) if a == rs1 && s == size => {
                            // SAFETY: aligned arena address from `amo_host`.
                            if size == 4 {
                                unsafe { AtomicU32::from_ptr(h as *mut u32) }
                                    .compare_exchange(
                                        old as u32,
                                        rs2 as u32,
                                        Ordering::SeqCst,
                                        Ordering::SeqCst,
                                    )
                                    .is_ok()
                            } else {
                                // SAFETY: aligned arena address from `amo_host`.
                                unsafe { AtomicU64::from_ptr(h as *mut u64) }
                                    .compare_exchange(old, rs2, Ordering::SeqCst, Ordering::SeqCst)
                                    .is_ok()
                            }
                        }
                        _ => false,
                    };
                    self.xw(inst.rd, !ok as u64);
                }
                Op::AmoswapW => amo!(AtomicU32, u32, 4, |a, v| a.swap(v, Ordering::SeqCst) as i32),
                Op::AmoaddW => amo!(AtomicU32, u32, 4, |a, v| a.fetch_add(v, Ordering::SeqCst)
                    as i32),
                Op::AmoxorW => amo!(AtomicU32, u32, 4, |a, v| a.fetch_xor(v, Ordering::SeqCst)
                    as i32),
                Op::AmoandW => amo!(AtomicU32, u32, 4, |a, v| a.fetch_and(v, Ordering::SeqCst)
                    as i32),
                Op::AmoorW => amo!(AtomicU32, u32, 4, |a, v| a.fetch_or(v, Ordering::SeqCst)
                    as i32),
                Op::AmominW => amo!(AtomicI32, i32, 4, |a, v| a.fetch_min(v, Ordering::SeqCst)),
                Op::AmomaxW => amo!(AtomicI32, i32, 4, |a, v| a.fetch_max(v, Ordering::SeqCst)),
                Op::AmominuW => amo!(AtomicU32, u32, 4, |a, v| a.fetch_min(v, Ordering::SeqCst)
                    as i32),
                Op::AmomaxuW => amo!(AtomicU32, u32, 4, |a, v| a.fetch_max(v, Ordering::SeqCst)
                    as i32),
                Op::AmoswapD => amo!(AtomicU64, u64, 8, |a, v| a.swap(v, Ordering::SeqCst)),
                Op::AmoaddD => amo!(AtomicU64, u64, 8, |a, v| a.fetch_add(v, Ordering::SeqCst)),
                Op::AmoxorD => amo!(AtomicU64, u64, 8, |a, v| a.fetch_xor(v, Ordering::SeqCst)),
                Op::AmoandD => amo!(AtomicU64, u64, 8, |a, v| a.fetch_and(v, Ordering::SeqCst)),
                Op::AmoorD => amo!(AtomicU64, u64, 8, |a, v| a.fetch_or(v, Ordering::SeqCst)),
                Op::AmominD => amo!(AtomicI64, i64, 8, |a, v| a.fetch_min(v, Ordering::SeqCst)),
                Op::AmomaxD => amo!(AtomicI64, i64, 8, |a, v| a.fetch_max(v, Ordering::SeqCst)),
                Op::AmominuD => amo!(AtomicU64, u64, 8, |a, v| a.fetch_min(v, Ordering::SeqCst)),
                Op::AmomaxuD => amo!(AtomicU64, u64, 8, |a, v| a.fetch_max(v, Ordering::SeqCst)),

                // ---- F / D ----
                Op::Flw => {
                    fp_on!();
                    let v = tr!(self.load_u32(rs1.wrapping_add(imm)));
                    self.fws(inst.rd, v);
                }
                Op::Fld => {
                    fp_on!();
                    let v = tr!(self.load_u64(rs1.wrapping_add(imm)));
                    self.fwd(inst.rd, v);
                }
                Op::Fsw => {
                    fp_on!();
                    let v = self.fd(inst.rs2) as u32;
                    tr!(self.store_u32(rs1.wrapping_add(imm), v))
                }
                Op::Fsd => {
                    fp_on!();
                    let v = self.fd(inst.rs2);
                    tr!(self.store_u64(rs1.wrapping_add(imm), v))
                }
                Op::FmaddS => fma!(fs, fws, fpu::fma_s, false, false),
                Op::FmsubS => fma!(fs, fws, fpu::fma_s, false, true),
                Op::FnmsubS => fma!(fs, fws, fpu::fma_s, true, false),
                Op::FnmaddS => fma!(fs, fws, fpu::fma_s, true, true),
                Op::FmaddD => fma!(fd, fwd, fpu::fma_d, false, false),
                Op::FmsubD => fma!(fd, fwd, fpu::fma_d, false, true),
                Op::FnmsubD => fma!(fd, fwd, fpu::fma_d, true, false),
                Op::FnmaddD => fma!(fd, fwd, fpu::fma_d, true, true),
                Op::FaddS => fop_s!(|a, b, r, fl| fpu::add_s(a, b, r, &mut fl)),
                Op::FsubS => fop_s!(|a, b, r, fl| fpu::sub_s(a, b, r, &mut fl)),
                Op::FmulS => fop_s!(|a, b, r, fl| fpu::mul_s(a, b, r, &mut fl)),
                Op::FdivS => fop_s!(|a, b, r, fl| fpu::div_s(a, b, r, &mut fl)),
                Op::FsqrtS => fop_s!(|a, _b, r, fl| fpu::sqrt_s(a, r, &mut fl)),
                Op::FaddD => fop_d!(|a, b, r, fl| fpu::add_d(a, b, r, &mut fl)),
                Op::FsubD => fop_d!(|a, b, r, fl| fpu::sub_d(a, b, r, &mut fl)),
                Op::FmulD => fop_d!(|a, b, r, fl| fpu::mul_d(a, b, r, &mut fl)),
                Op::FdivD => fop_d!(|a, b, r, fl| fpu::div_d(a, b, r, &mut fl)),
                Op::FsqrtD => fop_d!(|a, _b, r, fl| fpu::sqrt_d(a, r, &mut fl)),
                Op::FsgnjS | Op::FsgnjnS | Op::FsgnjxS => {
                    fp_on!();
                    let (a, b) = (self.fs(inst.rs1), self.fs(inst.rs2));
                    let s = match inst.op {
                        Op::FsgnjS => b,
                        Op::FsgnjnS => !b,
                        _ => a ^ b,
                    } & 0x8000_0000;
                    self.fws(inst.rd, (a & 0x7fff_ffff) | s);
                }
                Op::FsgnjD | Op::FsgnjnD | Op::FsgnjxD => {
                    fp_on!();
                    let (a, b) = (self.fd(inst.rs1), self.fd(inst.rs2));
                    let s = match inst.op {
                        Op::FsgnjD => b,
                        Op::FsgnjnD => !b,
                        _ => a ^ b,
                    } & (1 << 63);
                    self.fwd(inst.rd, (a & !(1 << 63)) | s);
                }
                Op::FminS | Op::FmaxS => {
                    fp_on!();
                    let (a, b) = (self.fs(inst.rs1), self.fs(inst.rs2));
                    let mut fl = 0;
                    let r = if inst.op == Op::FminS {
                        fpu::min_s(a, b, &mut fl)
                    } else {
                        fpu::max_s(a, b, &mut fl)
                    };
                    self.accrue(fl);
                    self.fws(inst.rd, r);
                }
                Op::FminD | Op::FmaxD => {
                    fp_on!();
                    let (a, b) = (self.fd(inst.rs1), self.fd(inst.rs2));
                    let mut fl = 0;
                    let r = if inst.op == Op::FminD {
                        fpu::min_d(a, b, &mut fl)
                    } else {
                        fpu::max_d(a, b, &mut fl)
                    };
                    self.accrue(fl);
                    self.fwd(inst.rd, r);
                }
                Op::FcvtWS => fcvt_to_int!(fs, fpu::to_i32_s, |v: i32| v as i64 as u64),
                Op::FcvtWuS => fcvt_to_int!(fs, fpu::to_u32_s, |v: u32| v as i32 as i64 as u64),
                Op::FcvtLS => fcvt_to_int!(fs, fpu::to_i64_s, |v: i64| v as u64),
                Op::FcvtLuS => fcvt_to_int!(fs, fpu::to_u64_s, |v: u64| v),
                Op::FcvtWD => fcvt_to_int!(fd, fpu::to_i32_d, |v: i32| v as i64 as u64),
                Op::FcvtWuD => fcvt_to_int!(fd, fpu::to_u32_d, |v: u32| v as i32 as i64 as u64),
                Op::FcvtLD => fcvt_to_int!(fd, fpu::to_i64_d, |v: i64| v as u64),
                Op::FcvtLuD => fcvt_to_int!(fd, fpu::to_u64_d, |v: u64| v),
                Op::FcvtSW => fcvt_from_int!(fws, fpu::from_i32_s, |x: u64| x as i32),
                Op::FcvtSWu => fcvt_from_int!(fws, fpu::from_u32_s, |x: u64| x as u32),
                Op::FcvtSL => fcvt_from_int!(fws, fpu::from_i64_s, |x: u64| x as i64),
                Op::FcvtSLu => fcvt_from_int!(fws, fpu::from_u64_s, |x: u64| x),
                Op::FcvtDW => fcvt_from_int!(fwd, fpu::from_i32_d, |x: u64| x as i32),
                Op::FcvtDWu => fcvt_from_int!(fwd, fpu::from_u32_d, |x: u64| x as u32),
                Op::FcvtDL => fcvt_from_int!(fwd, fpu::from_i64_d, |x: u64| x as i64),
                Op::FcvtDLu => fcvt_from_int!(fwd, fpu::from_u64_d, |x: u64| x),
                Op::FcvtSD => {
                    fp_on!();
                    let r = rm!();
                    let mut fl = 0;
                    let v = fpu::d_to_s(self.fd(inst.rs1), r, &mut fl);
                    self.accrue(fl);
                    self.fws(inst.rd, v);
                }
                Op::FcvtDS => {
                    fp_on!();
                    // Encoded with an rm field that must still be valid.
                    let _ = rm!();
                    let mut fl = 0;
                    let v = fpu::s_to_d(self.fs(inst.rs1), &mut fl);
                    self.accrue(fl);
                    self.fwd(inst.rd, v);
                }
                Op::FmvXW => {
                    fp_on!();
                    self.xw(inst.rd, sext32(self.fd(inst.rs1)))
                }
                Op::FmvWX => {
                    fp_on!();
                    self.fws(inst.rd, rs1 as u32)
                }
                Op::FmvXD => {
                    fp_on!();
                    self.xw(inst.rd, self.fd(inst.rs1))
                }
                Op::FmvDX => {
                    fp_on!();
                    self.fwd(inst.rd, rs1)
                }
                Op::FeqS => fcmp!(fs, fpu::eq_s),
                Op::FltS => fcmp!(fs, fpu::lt_s),
                Op::FleS => fcmp!(fs, fpu::le_s),
                Op::FeqD => fcmp!(fd, fpu::eq_d),
                Op::FltD => fcmp!(fd, fpu::lt_d),
                Op::FleD => fcmp!(fd, fpu::le_d),
                Op::FclassS => {
                    fp_on!();
                    self.xw(inst.rd, fpu::classify_s(self.fs(inst.rs1)))
                }
                Op::FclassD => {
                    fp_on!();
                    self.xw(inst.rd, fpu::classify_d(self.fd(inst.rs1)))
                }
            }
        }
        // Fell off the end: the block stopped at a page boundary or its length limit.
        let last = insts[insts.len() - 1];
        self.pc = pc0.wrapping_add(last.off as u64).wrapping_add(last.len());
        self.instret += insts.len() as u64;
        Flow::Next
    }
}

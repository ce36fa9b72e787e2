//! Guest memory accesses from the engine: TLB fast paths and the translate-and-fill slow paths.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

use super::cpu::Cpu;
use super::mmu::{self, Access};
use super::tlb::{ACC_EXEC, ACC_READ, ACC_WRITE};
use super::trap::Trap;
use crate::csr::cause;
use crate::phys_mem::PAGE_SIZE;

macro_rules! load_fn {
    ($name:ident, $t:ty, $at:ty) => {
        #[inline(always)]
        pub fn $name(&mut self, va: u64) -> Result<$t, Trap> {
            const SIZE: u64 = std::mem::size_of::<$t>() as u64;
            if let Some(h) = self.tlb.lookup(self.mmu_idx, ACC_READ, va, SIZE) {
                // SAFETY: TLB entries point into the arena owned by `self.mem` (which outlives
                // the hart), at pages the PMC approved; the lookup guarantees alignment.
                return Ok(unsafe { <$at>::from_ptr(h as *mut $t) }.load(Relaxed));
            }
            self.load_slow(va, SIZE).map(|v| v as $t)
        }
    };
}

macro_rules! store_fn {
    ($name:ident, $t:ty, $at:ty) => {
        #[inline(always)]
        pub fn $name(&mut self, va: u64, v: $t) -> Result<(), Trap> {
            const SIZE: u64 = std::mem::size_of::<$t>() as u64;
            if let Some(h) = self.tlb.lookup(self.mmu_idx, ACC_WRITE, va, SIZE) {
                if !self.mem.is_code_host(h) {
                    // SAFETY: as for loads; the entry was filled for a writable page.
                    unsafe { <$at>::from_ptr(h as *mut $t) }.store(v, Relaxed);
                    return Ok(());
                }
            }
            self.store_slow(va, SIZE, v as u64)
        }
    };
}

impl Cpu {
    load_fn!(load_u8, u8, AtomicU8);
    load_fn!(load_u16, u16, AtomicU16);
    load_fn!(load_u32, u32, AtomicU32);
    load_fn!(load_u64, u64, AtomicU64);
    store_fn!(store_u8, u8, AtomicU8);
    store_fn!(store_u16, u16, AtomicU16);
    store_fn!(store_u32, u32, AtomicU32);
    store_fn!(store_u64, u64, AtomicU64);

    /// Translate `va` in TLB context `ctx` and cache the page, unless the TLB has it after all
    /// (see [`super::tlb::Tlb::refind`]). Returns the exact HPA.
    #[inline(never)]
    pub fn fill(&mut self, ctx: usize, va: u64, access: Access) -> Result<u64, Trap> {
        let acc = match access {
            Access::Read => ACC_READ,
            Access::Write => ACC_WRITE,
            Access::Exec => ACC_EXEC,
        };
        if let Some(host_page) = self.tlb.refind(ctx, acc, va) {
            return Ok(self.mem.hpa_of_host(host_page) | (va & (PAGE_SIZE - 1)));
        }
        let walk = self.walk_ctx_for(ctx, false);
        match mmu::translate(&self.mem, &self.pmc, &walk, va, access) {
            Ok(t) => {
                let page = t.hpa & !(PAGE_SIZE - 1);
                self.tlb.insert(ctx, acc, va, self.mem.host_addr(page));
                Ok(t.hpa)
            }
            Err(f) => Err(Trap::from_fault(f, va)),
        }
    }

    #[cold]
    #[inline(never)]
    pub fn load_slow(&mut self, va: u64, size: u64) -> Result<u64, Trap> {
        let in_page = PAGE_SIZE - (va & (PAGE_SIZE - 1));
        let hpa = self.fill(self.mmu_idx, va, Access::Read)?;
        if size <= in_page {
            return Ok(self.mem.read_sized(hpa, size));
        }
        let hpa2 = self.fill(self.mmu_idx, va.wrapping_add(in_page), Access::Read)?;
        let lo = self.mem.read_sized(hpa, 1);
        let mut v = lo;
        for i in 1..size {
            let b = if i < in_page {
                self.mem.read_sized(hpa + i, 1)
            } else {
                self.mem.read_sized(hpa2 + (i - in_page), 1)
            };
            v |= b << (8 * i);
        }
        Ok(v)
    }

    #[cold]
    #[inline(never)]
    pub fn store_slow(&mut self, va: u64, size: u64, v: u64) -> Result<(), Trap> {
        let in_page = PAGE_SIZE - (va & (PAGE_SIZE - 1));
        let hpa = self.fill(self.mmu_idx, va, Access::Write)?;
        if size <= in_page {
            self.mem.note_store(hpa, size);
            self.mem.write_sized(hpa, size, v);
            return Ok(());
        }
        // Both pages must be writable before any byte is written.
        let hpa2 = self.fill(self.mmu_idx, va.wrapping_add(in_page), Access::Write)?;
        self.mem.note_store(hpa, in_page);
        self.mem.note_store(hpa2, size - in_page);
        for i in 0..size {
            let b = (v >> (8 * i)) & 0xff;
            if i < in_page {
                self.mem.write_sized(hpa + i, 1, b);
            } else {
                self.mem.write_sized(hpa2 + (i - in_page), 1, b);
            }
        }
        Ok(())
    }

    /// Host address for an AMO / SC of `size` bytes at `va` (needs write permission).
    #[inline(always)]
    pub fn amo_host(&mut self, va: u64, size: u64) -> Result<usize, Trap> {
        if va & (size - 1) != 0 {
            return Err(Trap::exc(cause::STORE_MISALIGNED, va));
        }
        if let Some(h) = self.tlb.lookup(self.mmu_idx, ACC_WRITE, va, size) {
            if !self.mem.is_code_host(h) {
                return Ok(h);
            }
        }
        let hpa = self.fill(self.mmu_idx, va, Access::Write)?;
        self.mem.note_store(hpa, size);
        Ok(self.mem.host_addr(hpa))
    }

    /// Physical address of `pc` if the TLB has it for fetching.
    #[inline(always)]
    pub fn tlb_fetch_hit(&self, pc: u64) -> Option<u64> {
        self.tlb
            .lookup(self.mmu_idx, ACC_EXEC, pc, 2)
            .map(|h| self.mem.hpa_of_host(h))
    }

    /// HPA of the instruction parcel at `pc` (for building blocks).
    #[inline(always)]
    pub fn fetch_hpa(&mut self, pc: u64) -> Result<u64, Trap> {
        if let Some(h) = self.tlb.lookup(self.mmu_idx, ACC_EXEC, pc, 2) {
            return Ok(self.mem.hpa_of_host(h));
        }
        self.fill(self.mmu_idx, pc, Access::Exec)
    }
}

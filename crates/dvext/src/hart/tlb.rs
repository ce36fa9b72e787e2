//! Software TLB: guest-virtual page -> host address, with both translation stages and the PMC
//! already applied. Direct-mapped, one table per (privilege/SUM context, access type), so the
//! fast path of a load is one compare and one host access.

use crate::phys_mem::PAGE_SHIFT;

/// 4096 entries (16 MiB of 4 KiB pages) per table: with 256, a CPU-bound Linux workload
/// (gzip, sha256, a shell loop) refilled 8.4M entries by page walks, with 4096 1.0M. A flush
/// clears only the tables filled since the last one.
pub(crate) const TLB_BITS: u32 = 12;
pub(crate) const TLB_SIZE: usize = 1 << TLB_BITS;
const PAGE_MASK: u64 = !((1u64 << PAGE_SHIFT) - 1);
/// Never matches a lookup: a lookup key is a page number plus at most the low three bits of a
/// misaligned address, so bits 3..PAGE_SHIFT are clear in it (a tag of 1 matched misaligned
/// accesses at virtual address 1, 5, 9, ... through empty entries, with host address = va).
const INVALID: u64 = 1 << (PAGE_SHIFT - 1);

/// Translation context: which privilege and SUM setting the entries were filled under.
pub(crate) const MMU_VS: usize = 0;
pub(crate) const MMU_VS_SUM: usize = 1;
pub(crate) const MMU_VU: usize = 2;
pub(crate) const MMU_CONTEXTS: usize = 3;

pub(crate) const ACC_READ: usize = 0;
pub(crate) const ACC_WRITE: usize = 1;
pub(crate) const ACC_EXEC: usize = 2;

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct TlbEntry {
    /// Page-aligned guest virtual address, or INVALID.
    pub tag: u64,
    /// Host address of the page minus `tag`: host = va + addend.
    pub addend: usize,
}

const EMPTY: TlbEntry = TlbEntry {
    tag: INVALID,
    addend: 0,
};

/// Tables are indexed by `ctx << 2 | acc` masked to 4 bits: 16 slots (12 used) so the index
/// needs no bounds check on the hot path.
const TABLES: usize = 16;

#[inline(always)]
fn table(ctx: usize, acc: usize) -> usize {
    ((ctx << 2) | acc) & (TABLES - 1)
}

pub(crate) struct Tlb {
    tables: Box<[[TlbEntry; TLB_SIZE]; TABLES]>,
    /// Bit `t`: table `t` may hold entries (filled since its last flush).
    used: u16,
    /// Entries filled by a page walk, and whole-TLB flushes (for `--stats`).
    pub fills: u64,
    pub flushes: u64,
}

impl Tlb {
    pub fn new() -> Self {
        Tlb {
            tables: Box::new([[EMPTY; TLB_SIZE]; TABLES]),
            used: 0,
            fills: 0,
            flushes: 0,
        }
    }

    #[inline(always)]
    fn slot(va: u64) -> usize {
        (va >> PAGE_SHIFT) as usize & (TLB_SIZE - 1)
    }

    /// Host address for an access of `size` bytes (a power of two) at `va`, if the page is
    /// cached and the access is naturally aligned (misaligned accesses always miss).
    #[inline(always)]
    pub fn lookup(&self, ctx: usize, acc: usize, va: u64, size: u64) -> Option<usize> {
        let e = &self.tables[table(ctx, acc)][Self::slot(va)];
        if e.tag == va & (PAGE_MASK | (size - 1)) {
            Some((va as usize).wrapping_add(e.addend))
        } else {
            None
        }
    }

    /// The table of `ctx` and `acc`, for compiled code's inline lookups.
    pub fn table_ptr(&self, ctx: usize, acc: usize) -> *const TlbEntry {
        self.tables[table(ctx, acc)].as_ptr()
    }

    pub fn insert(&mut self, ctx: usize, acc: usize, va: u64, host_page: usize) {
        let tag = va & PAGE_MASK;
        self.fills += 1;
        self.used |= 1 << table(ctx, acc);
        self.tables[table(ctx, acc)][Self::slot(va)] = TlbEntry {
            tag,
            addend: host_page.wrapping_sub(tag as usize),
        };
    }

    pub fn flush_all(&mut self) {
        self.flushes += 1;
        for (i, t) in self.tables.iter_mut().enumerate() {
            if self.used & (1 << i) != 0 {
                t.fill(EMPTY);
            }
        }
        self.used = 0;
    }

    /// Drop every entry for the page of `va`, in every context.
    pub fn flush_va(&mut self, va: u64) {
        let slot = Self::slot(va);
        let tag = va & PAGE_MASK;
        for t in self.tables.iter_mut() {
            if t[slot].tag == tag {
                t[slot] = EMPTY;
            }
        }
    }

    /// Drop read entries (MXR changed which pages are readable).
    pub fn flush_reads(&mut self) {
        for ctx in 0..MMU_CONTEXTS {
            let t = table(ctx, ACC_READ);
            if self.used & (1 << t) != 0 {
                self.tables[t].fill(EMPTY);
                self.used &= !(1 << t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_hits_aligned_and_misses_misaligned() {
        let mut t = Tlb::new();
        t.insert(MMU_VS, ACC_READ, 0x4000_1234, 0x10_0000);
        assert_eq!(t.lookup(MMU_VS, ACC_READ, 0x4000_1008, 8), Some(0x10_0008));
        assert_eq!(t.lookup(MMU_VS, ACC_READ, 0x4000_1001, 1), Some(0x10_0001));
        assert_eq!(
            t.lookup(MMU_VS, ACC_READ, 0x4000_1004, 8),
            None,
            "misaligned"
        );
        assert_eq!(
            t.lookup(MMU_VS, ACC_WRITE, 0x4000_1008, 8),
            None,
            "other access type"
        );
        assert_eq!(
            t.lookup(MMU_VU, ACC_READ, 0x4000_1008, 8),
            None,
            "other context"
        );
        t.flush_va(0x4000_1fff);
        assert_eq!(t.lookup(MMU_VS, ACC_READ, 0x4000_1008, 8), None);
    }

    #[test]
    fn flushes_clear_every_filled_table() {
        let mut t = Tlb::new();
        for ctx in 0..MMU_CONTEXTS {
            for acc in [ACC_READ, ACC_WRITE, ACC_EXEC] {
                t.insert(ctx, acc, 0x8000_0000, 0x20_0000);
            }
        }
        t.flush_reads();
        for ctx in 0..MMU_CONTEXTS {
            assert_eq!(t.lookup(ctx, ACC_READ, 0x8000_0000, 4), None);
            assert_eq!(t.lookup(ctx, ACC_WRITE, 0x8000_0000, 4), Some(0x20_0000));
        }
        t.flush_all();
        t.insert(MMU_VU, ACC_READ, 0x1000, 0x30_0000);
        for ctx in 0..MMU_CONTEXTS {
            for acc in [ACC_WRITE, ACC_EXEC] {
                assert_eq!(t.lookup(ctx, acc, 0x8000_0000, 4), None);
            }
        }
        // A table filled after a flush is cleared by the next one.
        assert_eq!(t.lookup(MMU_VU, ACC_READ, 0x1000, 8), Some(0x30_0000));
        t.flush_all();
        assert_eq!(t.lookup(MMU_VU, ACC_READ, 0x1000, 8), None);
        assert_eq!((t.fills, t.flushes), (10, 2));
    }

    #[test]
    fn empty_never_matches_page_zero() {
        let t = Tlb::new();
        assert_eq!(t.lookup(MMU_VS, ACC_READ, 0, 1), None);
        assert_eq!(t.lookup(MMU_VS, ACC_EXEC, 0, 2), None);
    }
}

//! Software TLB: guest-virtual page -> host address, with both translation stages and the PMC
//! already applied. Direct-mapped, one table per (privilege/SUM context, access type), so the
//! fast path of a load is one compare and one host access; behind each table, a few entries
//! it evicted, looked at before a page walk.

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

/// Entries each table keeps after evicting them. Pages 16 MiB apart share a slot, and a
/// process's hot pages land at random distances (its stack, heap and data are placed apart
/// at random): in about one run in eight of the bench's 4-job smp row, one job's gzip had two
/// hot pages on one slot and walked the page tables 0.4-1.2M times a second instead of a few
/// thousand, at half speed (finishing 0.1-0.5 s after the other jobs). Such pages now trade
/// places between the slot and this list instead of being walked for again.
pub(crate) const VICTIMS: usize = 8;

/// Tables are indexed by `ctx << 2 | acc` masked to 4 bits: 16 slots (12 used) so the index
/// needs no bounds check on the hot path.
const TABLES: usize = 16;

#[inline(always)]
fn table(ctx: usize, acc: usize) -> usize {
    ((ctx << 2) | acc) & (TABLES - 1)
}

pub(crate) struct Tlb {
    tables: Box<[[TlbEntry; TLB_SIZE]; TABLES]>,
    /// Each table's evicted entries, and where the next eviction goes (round robin).
    victims: [[TlbEntry; VICTIMS]; TABLES],
    next_victim: [u8; TABLES],
    /// Bit `t`: table `t` may hold entries (filled since its last flush).
    used: u16,
    /// Entries filled by a page walk, misses served from the evicted entries instead, and
    /// whole-TLB flushes (for `--stats`).
    pub fills: u64,
    pub refound: u64,
    pub flushes: u64,
}

impl Tlb {
    pub fn new() -> Self {
        Tlb {
            tables: Box::new([[EMPTY; TLB_SIZE]; TABLES]),
            victims: [[EMPTY; VICTIMS]; TABLES],
            next_victim: [0; TABLES],
            used: 0,
            fills: 0,
            refound: 0,
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

    /// Host address of the page of `va` if the table of `ctx` and `acc` holds it without a
    /// walk: in its slot (an access the fast path refuses: misaligned, or a store to a code
    /// page) or among the entries it evicted, which then trades places with the slot's.
    #[inline]
    pub fn refind(&mut self, ctx: usize, acc: usize, va: u64) -> Option<usize> {
        let t = table(ctx, acc);
        let tag = va & PAGE_MASK;
        let slot = &mut self.tables[t][Self::slot(va)];
        if slot.tag != tag {
            let v = self.victims[t].iter_mut().find(|v| v.tag == tag)?;
            std::mem::swap(slot, v);
            self.refound += 1;
        }
        Some((tag as usize).wrapping_add(slot.addend))
    }

    /// Cache a translation just walked (not held: see [`Tlb::refind`]), keeping the entry it
    /// evicts among the table's victims.
    pub fn insert(&mut self, ctx: usize, acc: usize, va: u64, host_page: usize) {
        let t = table(ctx, acc);
        let tag = va & PAGE_MASK;
        self.fills += 1;
        self.used |= 1 << t;
        let new = TlbEntry {
            tag,
            addend: host_page.wrapping_sub(tag as usize),
        };
        let old = std::mem::replace(&mut self.tables[t][Self::slot(va)], new);
        if old.tag != INVALID {
            let k = self.next_victim[t] as usize;
            self.victims[t][k] = old;
            self.next_victim[t] = ((k + 1) % VICTIMS) as u8;
        }
    }

    pub fn flush_all(&mut self) {
        self.flushes += 1;
        for t in 0..TABLES {
            if self.used & (1 << t) != 0 {
                self.clear(t);
            }
        }
        self.used = 0;
    }

    /// Drop every entry for the page of `va`, in every context.
    pub fn flush_va(&mut self, va: u64) {
        let slot = Self::slot(va);
        let tag = va & PAGE_MASK;
        for (t, v) in self.tables.iter_mut().zip(self.victims.iter_mut()) {
            for e in std::iter::once(&mut t[slot]).chain(v.iter_mut()) {
                if e.tag == tag {
                    *e = EMPTY;
                }
            }
        }
    }

    /// Drop read entries (MXR changed which pages are readable).
    pub fn flush_reads(&mut self) {
        for ctx in 0..MMU_CONTEXTS {
            let t = table(ctx, ACC_READ);
            if self.used & (1 << t) != 0 {
                self.clear(t);
                self.used &= !(1 << t);
            }
        }
    }

    fn clear(&mut self, t: usize) {
        self.tables[t].fill(EMPTY);
        self.victims[t] = [EMPTY; VICTIMS];
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

    /// Pages 16 MiB apart share a slot: `n` of them, filled in turn.
    fn fill_aliases(t: &mut Tlb, n: u64) {
        for k in 0..n {
            t.insert(
                MMU_VU,
                ACC_READ,
                0x4000_0000 + (k << 24),
                0x10_0000 * (k as usize + 1),
            );
        }
    }

    #[test]
    fn an_evicted_entry_is_refound_and_trades_places_with_the_slot() {
        let mut t = Tlb::new();
        fill_aliases(&mut t, 2);
        let (a, b) = (0x4000_0123, 0x4100_0123);
        assert_eq!(
            t.lookup(MMU_VU, ACC_READ, a, 1),
            None,
            "evicted from its slot"
        );
        assert_eq!(t.refind(MMU_VU, ACC_READ, a), Some(0x10_0000));
        assert_eq!(t.lookup(MMU_VU, ACC_READ, a, 1), Some(0x10_0123));
        assert_eq!(t.lookup(MMU_VU, ACC_READ, b, 1), None);
        assert_eq!(t.refind(MMU_VU, ACC_READ, b), Some(0x20_0000));
        // In its slot already (a misaligned access): found, nothing moves.
        assert_eq!(t.refind(MMU_VU, ACC_READ, b), Some(0x20_0000));
        assert_eq!(t.refind(MMU_VU, ACC_WRITE, b), None, "other access type");
        assert_eq!(t.refind(MMU_VS, ACC_READ, b), None, "other context");
        assert_eq!(
            t.refind(MMU_VU, ACC_READ, 0x4200_0000),
            None,
            "never filled"
        );
        assert_eq!((t.fills, t.refound), (2, 2));
    }

    #[test]
    fn the_oldest_evicted_entries_make_room() {
        let mut t = Tlb::new();
        let n = VICTIMS as u64 + 3;
        fill_aliases(&mut t, n);
        // The last page holds the slot; the VICTIMS before it are kept, older ones dropped.
        for k in 0..n {
            let found = t
                .refind(MMU_VU, ACC_READ, 0x4000_0000 + (k << 24))
                .is_some();
            assert_eq!(found, k >= n - 1 - VICTIMS as u64, "page {k}");
        }
    }

    #[test]
    fn evicted_entries_go_with_every_flush() {
        let mut t = Tlb::new();
        let a = 0x4000_0000;
        fill_aliases(&mut t, 2);
        t.flush_va(a + 0xfff);
        assert_eq!(t.refind(MMU_VU, ACC_READ, a), None, "flush_va");
        assert!(t.refind(MMU_VU, ACC_READ, a + (1 << 24)).is_some());
        fill_aliases(&mut t, 2);
        t.flush_reads();
        assert_eq!(t.refind(MMU_VU, ACC_READ, a), None, "flush_reads");
        fill_aliases(&mut t, 2);
        t.flush_all();
        assert_eq!(t.refind(MMU_VU, ACC_READ, a), None, "flush_all");
    }
}

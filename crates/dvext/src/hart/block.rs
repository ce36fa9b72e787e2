//! Decoded blocks, cached per host-physical address.
//!
//! A block is a run of decoded instructions from one page, ending at a control transfer, a
//! system instruction, the end of the page or `MAX_BLOCK_INSTS`. Blocks are keyed by physical
//! address (so all virtual aliases share them) and remember the page's code generation; a store
//! to the page bumps the generation and the block is rebuilt at its next use. A small
//! direct-mapped jump cache maps a virtual PC to its block without hashing.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::decode;
use super::inst::Inst;
use super::jit::{JitFn, Region};
use crate::phys_mem::PhysMemory;

pub(crate) const MAX_BLOCK_INSTS: usize = 64;

/// Decode the block starting at `hpa`: up to `MAX_BLOCK_INSTS` instructions, ending after one
/// that ends blocks, at the end of the page, or before a 32-bit instruction that crosses it.
/// `take` may stop it earlier, before the first instruction it refuses.
pub(crate) fn decode_block(mem: &PhysMemory, hpa: u64, take: impl Fn(&Inst) -> bool) -> Vec<Inst> {
    let page_end = (hpa | (crate::phys_mem::PAGE_SIZE - 1)) + 1;
    let mut insts = Vec::with_capacity(16);
    let mut a = hpa;
    while a < page_end && insts.len() < MAX_BLOCK_INSTS {
        let lo = mem.load_u16_unchecked(a) as u32;
        let raw = if lo & 3 == 3 {
            if a + 2 >= page_end {
                break;
            }
            lo | (mem.load_u16_unchecked(a + 2) as u32) << 16
        } else {
            lo
        };
        let mut inst = decode::decode(raw);
        inst.off = (a - hpa) as u16;
        if !take(&inst) {
            break;
        }
        a += inst.len();
        let end = inst.ends_block();
        insts.push(inst);
        if end {
            break;
        }
    }
    insts
}

/// Whether `insts`, decoded from the block at `hpa`, still match the bits in memory.
pub(crate) fn matches_memory(mem: &PhysMemory, hpa: u64, insts: &[Inst]) -> bool {
    insts.iter().all(|inst| {
        let a = hpa + inst.off as u64;
        let lo = mem.load_u16_unchecked(a) as u32;
        let raw = if inst.raw & 3 == 3 {
            lo | (mem.load_u16_unchecked(a + 2) as u32) << 16
        } else {
            lo
        };
        raw == inst.raw
    })
}

/// 16384 entries (640 KiB per hart). With 4096, a 4-vCPU run of parallel sha256sum + gzip
/// missed on ~15% of block lookups (slots taken by other pcs), each a hash-map probe that
/// missed the host cache; with 16384, 3-5%.
const JMP_BITS: u32 = 14;
const JMP_SIZE: usize = 1 << JMP_BITS;
/// Beyond this many blocks the cache is dropped wholesale (bounds memory on guests that
/// generate a lot of code).
const MAX_BLOCKS: usize = 1 << 17;

/// Hasher for physical addresses: one multiply (SipHash showed up in profiles).
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ *b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) struct Block {
    pub hpa: u64,
    pub gen: u32,
    /// fence.i epoch at which the block was last known to match memory.
    pub epoch: u32,
    pub insts: Box<[Inst]>,
    /// Runs so far, counted until the block is compiled ([`NEVER_COMPILE`]: not compilable).
    pub hits: u32,
    /// The compiled form, once there is one, and the region it covers.
    pub jit: Option<JitFn>,
    pub region: Option<std::sync::Arc<Region>>,
    /// The compiled region this block's region last continued into on the same page (see
    /// [`BlockCache::link`]).
    pub link: Link,
    /// The block the run loop went on to from this one last time, on the same page.
    pub next: Next,
}

/// Whether running the block of `insts` to its end leaves the translation and the privilege
/// level as they were (it ends with a branch or jump, or is cut short by the page end or the
/// length limit), so that the block after it may come from its link ([`BlockCache::next`]).
#[inline(always)]
pub(crate) fn chains(insts: &[Inst]) -> bool {
    use crate::hart::inst::Op::*;
    insts.last().is_some_and(|i| {
        matches!(i.op, Jal | Jalr | Beq | Bne | Blt | Bge | Bltu | Bgeu) || !i.ends_block()
    })
}

/// An interpreted block's last successor on its own page: its virtual pc and index.
#[derive(Clone, Copy)]
pub(crate) struct Next {
    pc: u64,
    idx: u32,
}

impl Next {
    /// Matches no pc (instructions are 2-byte aligned).
    pub const NONE: Next = Next { pc: 1, idx: 0 };
}

/// A compiled block's last successor on its own page: virtual pc, code and index, as of a
/// fence.i epoch.
#[derive(Clone, Copy)]
pub(crate) struct Link {
    pc: u64,
    jit: Option<JitFn>,
    idx: u32,
    epoch: u32,
}

impl Link {
    /// Matches no pc (instructions are 2-byte aligned).
    pub const NONE: Link = Link {
        pc: 1,
        jit: None,
        idx: 0,
        epoch: 0,
    };
}

/// `Block::hits` of a block the compiling tier cannot or will not take.
pub(crate) const NEVER_COMPILE: u32 = u32::MAX;
/// `Block::hits` of a block whose region the compiler thread is working on.
pub(crate) const COMPILING: u32 = u32::MAX - 1;

/// A jump-cache entry. It also carries the block's compiled code with the page generation and
/// fence.i epoch the block was current at, so that going from one compiled region to the next
/// reads this entry and the page's generation, not the block itself (a cache miss that
/// dominated region-to-region dispatch).
#[derive(Clone, Copy)]
struct JmpEntry {
    pc: u64,
    hpa: u64,
    jit: Option<JitFn>,
    idx: u32,
    gen: u32,
    epoch: u32,
}

const JMP_EMPTY: JmpEntry = JmpEntry {
    pc: 1,
    hpa: 0,
    jit: None,
    idx: 0,
    gen: 0,
    epoch: 0,
};

pub(crate) struct BlockCache {
    blocks: Vec<Block>,
    by_hpa: HashMap<u64, u32, BuildHasherDefault<AddrHasher>>,
    jmp: Box<[JmpEntry; JMP_SIZE]>,
    /// fence.i epoch: blocks from an older epoch are compared with memory before reuse.
    epoch: u32,
    /// Blocks decoded since the hart was created, whole-cache flushes, fence.i count.
    pub built: u64,
    pub flushes: u64,
    pub fences: u64,
}

impl BlockCache {
    pub fn new() -> Self {
        BlockCache {
            blocks: Vec::new(),
            by_hpa: HashMap::default(),
            jmp: Box::new([JMP_EMPTY; JMP_SIZE]),
            epoch: 0,
            built: 0,
            flushes: 0,
            fences: 0,
        }
    }

    #[inline(always)]
    fn jmp_slot(pc: u64) -> usize {
        (pc.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - JMP_BITS)) as usize
    }

    /// The cached block for virtual `pc` at physical `hpa`, if any (generation not checked).
    #[inline(always)]
    pub fn find(&mut self, pc: u64, hpa: u64) -> Option<u32> {
        if let Some(idx) = self.find_quick(pc, hpa) {
            return Some(idx);
        }
        let idx = *self.by_hpa.get(&hpa)?;
        self.remember(pc, idx);
        Some(idx)
    }

    /// The block for virtual `pc` at physical `hpa` if the jump cache has it.
    #[inline(always)]
    pub fn find_quick(&self, pc: u64, hpa: u64) -> Option<u32> {
        let e = &self.jmp[Self::jmp_slot(pc)];
        (e.pc == pc && e.hpa == hpa).then_some(e.idx)
    }

    /// The compiled code of the block at virtual `pc` and physical `hpa`, and its index, if
    /// the jump cache knows it as compiled at page generation `gen` in the current epoch.
    #[inline(always)]
    pub fn find_compiled(&self, pc: u64, hpa: u64, gen: u32) -> Option<(JitFn, u32)> {
        let e = &self.jmp[Self::jmp_slot(pc)];
        if e.pc == pc && e.hpa == hpa && e.gen == gen && e.epoch == self.epoch {
            return e.jit.map(|f| (f, e.idx));
        }
        None
    }

    /// Point the jump-cache entry of virtual `pc` at block `idx`, as the block is now.
    #[inline(always)]
    pub fn remember(&mut self, pc: u64, idx: u32) {
        let b = &self.blocks[idx as usize];
        self.jmp[Self::jmp_slot(pc)] = JmpEntry {
            pc,
            hpa: b.hpa,
            jit: b.jit,
            idx,
            gen: b.gen,
            epoch: b.epoch,
        };
    }

    #[inline(always)]
    pub fn get(&self, idx: u32) -> &Block {
        &self.blocks[idx as usize]
    }

    #[inline(always)]
    pub fn get_mut(&mut self, idx: u32) -> &mut Block {
        &mut self.blocks[idx as usize]
    }

    /// The compiled code and index of the block at virtual `pc`, if block `from`'s region
    /// continued there last time, on the same page, in this fence.i epoch.
    ///
    /// No TLB, jump-cache or page-generation check is needed: `from` was entered through
    /// `pc`'s virtual page just now, so that page maps to `from`'s physical page with the
    /// permissions the entry checked; the link was made when both blocks were current at the
    /// same generation of that one page, and `from` still is (a store to the page since would
    /// have made `from` stale, and a region that wrote its own page ends with no budget left,
    /// so the run loop looks again). A store from another hart is seen within the budget, as
    /// between the parts of one region.
    #[inline(always)]
    pub fn link(&self, from: u32, pc: u64) -> Option<(JitFn, u32)> {
        let l = &self.blocks[from as usize].link;
        if l.pc == pc && l.epoch == self.epoch {
            return l.jit.map(|f| (f, l.idx));
        }
        None
    }

    /// The block at virtual `pc`, if the interpreter went on there from block `from` last
    /// time, on the same page, and it is still current.
    ///
    /// No TLB or jump-cache lookup is needed: `from` was entered through `pc`'s virtual page
    /// just now and, having run to its end without a trap ([`chains`]), changed no
    /// translation; so the page still maps to `from`'s physical page, where the link was made,
    /// and `pc` to the linked block's. The linked block is checked like any other: its page's
    /// generation and the fence.i epoch.
    #[inline(always)]
    pub fn next(&self, from: u32, pc: u64, mem: &PhysMemory) -> Option<u32> {
        let n = self.blocks[from as usize].next;
        if n.pc != pc {
            return None;
        }
        let b = &self.blocks[n.idx as usize];
        (b.epoch == self.epoch && b.gen == mem.code_gen(b.hpa)).then_some(n.idx)
    }

    /// Record that the interpreter went on from block `from` to the current block `idx` at
    /// `pc` on the same page.
    #[inline(always)]
    pub fn set_next(&mut self, from: u32, pc: u64, idx: u32) {
        self.blocks[from as usize].next = Next { pc, idx };
    }

    /// Record that block `from`'s region continued into compiled block `idx` at `pc`, found
    /// current on `from`'s page just now.
    #[inline(always)]
    pub fn set_link(&mut self, from: u32, pc: u64, jit: JitFn, idx: u32) {
        self.blocks[from as usize].link = Link {
            pc,
            jit: Some(jit),
            idx,
            epoch: self.epoch,
        };
    }

    /// Whether the block at `hpa` should join a region being built: it ran at least `min`
    /// times and has no compiled code of its own, finished or under way.
    pub fn joins_region(&self, hpa: u64, min: u32) -> bool {
        self.by_hpa.get(&hpa).is_some_and(|&i| {
            let b = &self.blocks[i as usize];
            b.jit.is_none() && b.hits >= min && b.hits < COMPILING
        })
    }

    /// Drop every block's compiled code (the code space is being reused).
    pub fn drop_compiled(&mut self) {
        for e in self.jmp.iter_mut() {
            e.jit = None;
        }
        for b in self.blocks.iter_mut() {
            b.jit = None;
            b.region = None;
            b.link = Link::NONE;
            if b.hits != NEVER_COMPILE {
                b.hits = 0;
            }
        }
    }

    /// Insert (or replace, if `hpa` is already cached) a block; returns its index.
    pub fn insert(&mut self, pc: u64, block: Block) -> u32 {
        self.built += 1;
        let hpa = block.hpa;
        if let Some(&idx) = self.by_hpa.get(&hpa) {
            // Other entries for the old block fail the generation or epoch check: it was
            // replaced because its page changed or it no longer matched memory.
            self.blocks[idx as usize] = block;
            self.remember(pc, idx);
            return idx;
        }
        if self.blocks.len() >= MAX_BLOCKS {
            self.flush();
        }
        let idx = self.blocks.len() as u32;
        self.blocks.push(block);
        self.by_hpa.insert(hpa, idx);
        self.remember(pc, idx);
        idx
    }

    #[inline(always)]
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// fence.i: stores through the hart are tracked exactly, but memory written behind its
    /// back (devices, another hart racing the marking of a page as code) is not; so every
    /// block is re-checked against memory at its next use instead of being decoded again.
    pub fn fence_i(&mut self) {
        self.fences += 1;
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// Whether block `idx` still matches the instruction bits in memory; marks it current.
    pub fn revalidate(&mut self, idx: u32, mem: &PhysMemory) -> bool {
        let epoch = self.epoch;
        let b = &mut self.blocks[idx as usize];
        if !matches_memory(mem, b.hpa, &b.insts) {
            return false;
        }
        // The block is current; its compiled region also spans other blocks of the page.
        if b.region.as_ref().is_some_and(|r| !r.matches(mem, b.hpa)) {
            b.jit = None;
            b.region = None;
            b.link = Link::NONE;
            b.hits = 0;
        }
        b.epoch = epoch;
        true
    }

    /// Drop every block.
    pub fn flush(&mut self) {
        self.flushes += 1;
        self.blocks.clear();
        self.by_hpa.clear();
        self.jmp.fill(JMP_EMPTY);
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(hpa: u64, hits: u32) -> Block {
        Block {
            hpa,
            gen: 0,
            epoch: 0,
            insts: Box::new([]),
            hits,
            jit: None,
            region: None,
            link: Link::NONE,
            next: Next::NONE,
        }
    }

    unsafe extern "C" fn dummy(_: *mut crate::hart::jit::JitEnv) -> u64 {
        0
    }

    #[test]
    fn only_hot_blocks_without_code_of_their_own_join_regions() {
        let mut c = BlockCache::new();
        c.insert(0x1000, block(0x1000, 10));
        c.insert(0x1010, block(0x1010, 400));
        c.insert(0x1020, block(0x1020, COMPILING));
        c.insert(0x1030, block(0x1030, NEVER_COMPILE));
        let done = c.insert(0x1040, block(0x1040, 500));
        c.get_mut(done).jit = Some(dummy);
        assert!(!c.joins_region(0x1000, 250), "cold");
        assert!(c.joins_region(0x1010, 250), "hot, not compiled");
        assert!(!c.joins_region(0x1020, 250), "queued for its own region");
        assert!(!c.joins_region(0x1030, 250), "not compilable");
        assert!(!c.joins_region(0x1040, 250), "compiled");
        assert!(!c.joins_region(0x1050, 1), "no block there");
    }

    #[test]
    fn links_hold_for_their_pc_and_epoch_until_code_is_dropped() {
        let mut c = BlockCache::new();
        let a = c.insert(0x8000_1000, block(0x1000, 0));
        let b = c.insert(0x8000_1040, block(0x1040, 0));
        c.get_mut(b).jit = Some(dummy);
        assert!(c.link(a, 0x8000_1040).is_none(), "no link yet");
        c.set_link(a, 0x8000_1040, dummy, b);
        assert_eq!(c.link(a, 0x8000_1040).map(|(_, j)| j), Some(b));
        assert!(c.link(a, 0x8000_1044).is_none(), "another pc");
        assert!(c.link(b, 0x8000_1040).is_none(), "another block's link");
        c.fence_i();
        assert!(c.link(a, 0x8000_1040).is_none(), "made before fence.i");
        c.set_link(a, 0x8000_1040, dummy, b);
        assert!(c.link(a, 0x8000_1040).is_some());
        c.drop_compiled();
        assert!(c.link(a, 0x8000_1040).is_none(), "its code is gone");
    }
}

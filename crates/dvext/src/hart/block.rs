//! Decoded blocks, cached per host-physical address.
//!
//! A block is a run of decoded instructions from one page, ending at a control transfer, a
//! system instruction, the end of the page or `MAX_BLOCK_INSTS`. Blocks are keyed by physical
//! address (so all virtual aliases share them) and remember the page's code generation; a store
//! to the page bumps the generation and the block is rebuilt at its next use. A small
//! direct-mapped jump cache maps a virtual PC to its block without hashing.

use std::collections::HashMap;

use super::inst::Inst;

pub(crate) const MAX_BLOCK_INSTS: usize = 64;
const JMP_BITS: u32 = 12;
const JMP_SIZE: usize = 1 << JMP_BITS;
/// Beyond this many blocks the cache is dropped wholesale (bounds memory on guests that
/// generate a lot of code).
const MAX_BLOCKS: usize = 1 << 17;

pub(crate) struct Block {
    pub hpa: u64,
    pub gen: u32,
    pub insts: Box<[Inst]>,
}

#[derive(Clone, Copy)]
struct JmpEntry {
    pc: u64,
    hpa: u64,
    idx: u32,
}

const JMP_EMPTY: JmpEntry = JmpEntry {
    pc: 1,
    hpa: 0,
    idx: 0,
};

pub(crate) struct BlockCache {
    blocks: Vec<Block>,
    by_hpa: HashMap<u64, u32>,
    jmp: Box<[JmpEntry; JMP_SIZE]>,
}

impl BlockCache {
    pub fn new() -> Self {
        BlockCache {
            blocks: Vec::new(),
            by_hpa: HashMap::new(),
            jmp: Box::new([JMP_EMPTY; JMP_SIZE]),
        }
    }

    #[inline(always)]
    fn jmp_slot(pc: u64) -> usize {
        ((pc >> 1) ^ (pc >> (JMP_BITS + 1))) as usize & (JMP_SIZE - 1)
    }

    /// The cached block for virtual `pc` at physical `hpa`, if any (generation not checked).
    #[inline(always)]
    pub fn find(&mut self, pc: u64, hpa: u64) -> Option<u32> {
        let e = self.jmp[Self::jmp_slot(pc)];
        if e.pc == pc && e.hpa == hpa {
            return Some(e.idx);
        }
        let idx = *self.by_hpa.get(&hpa)?;
        self.jmp[Self::jmp_slot(pc)] = JmpEntry { pc, hpa, idx };
        Some(idx)
    }

    #[inline(always)]
    pub fn get(&self, idx: u32) -> &Block {
        &self.blocks[idx as usize]
    }

    /// Insert (or replace, if `hpa` is already cached) a block; returns its index.
    pub fn insert(&mut self, pc: u64, block: Block) -> u32 {
        let hpa = block.hpa;
        if let Some(&idx) = self.by_hpa.get(&hpa) {
            self.blocks[idx as usize] = block;
            self.jmp[Self::jmp_slot(pc)] = JmpEntry { pc, hpa, idx };
            return idx;
        }
        if self.blocks.len() >= MAX_BLOCKS {
            self.flush();
        }
        let idx = self.blocks.len() as u32;
        self.blocks.push(block);
        self.by_hpa.insert(hpa, idx);
        self.jmp[Self::jmp_slot(pc)] = JmpEntry { pc, hpa, idx };
        idx
    }

    /// Drop every block (fence.i).
    pub fn flush(&mut self) {
        self.blocks.clear();
        self.by_hpa.clear();
        self.jmp.fill(JMP_EMPTY);
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }
}

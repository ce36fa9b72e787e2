//! Regions: a hot block plus the blocks it reaches by direct jumps on the same page, compiled
//! into one function so that loops run without returning to the run loop.
//!
//! Staying on one page keeps every part of a region under the same translation (the entry was
//! fetched through the TLB, and nothing that changes translations is compiled) and the same
//! code generation counter, which the compiled code checks after each store it hands to the
//! engine (every store to a page holding decoded code goes that way): a store to the page
//! ends the region right after it, as it ends a block in the interpreter.

use crate::hart::block::{decode_block, matches_memory};
use crate::hart::inst::{Inst, Op};
use crate::phys_mem::{PhysMemory, PAGE_SIZE};

use super::translate::compilable;

/// Largest number of blocks in one region (bounds compile time and code size).
pub(crate) const MAX_PARTS: usize = 12;

/// One block of a region: its compiled instructions, `delta` bytes from the entry.
pub(crate) struct Part {
    pub delta: i64,
    pub insts: Box<[Inst]>,
}

pub(crate) struct Region {
    /// `parts[0]` is the entry block.
    pub parts: Vec<Part>,
}

impl Region {
    /// The part starting `delta` bytes from the entry.
    pub fn find(&self, delta: i64) -> Option<usize> {
        self.parts.iter().position(|p| p.delta == delta)
    }

    /// Whether every part still matches the instructions in memory (`entry_hpa`: where the
    /// entry block starts).
    pub fn matches(&self, mem: &PhysMemory, entry_hpa: u64) -> bool {
        self.parts
            .iter()
            .all(|p| matches_memory(mem, entry_hpa.wrapping_add_signed(p.delta), &p.insts))
    }
}

/// Guest-relative targets (bytes from the start of the part) a part can continue at without
/// leaving the page: branch targets, `jal` targets, and the next instruction.
fn successors(insts: &[Inst]) -> Vec<i64> {
    let last = insts[insts.len() - 1];
    let at = last.off as i64;
    let next = at + last.len() as i64;
    match last.op {
        Op::Beq | Op::Bne | Op::Blt | Op::Bge | Op::Bltu | Op::Bgeu => {
            vec![at + last.imm as i64, next]
        }
        Op::Jal => vec![at + last.imm as i64],
        Op::Jalr => vec![],
        _ => vec![next],
    }
}

/// The region entered at `entry_hpa`, whose block decoded to `entry` (None if the block starts
/// with an instruction only the interpreter runs). Other blocks join only if `hot` says so
/// (they have run often themselves and have no compiled code of their own): cold paths out of
/// a loop, and blocks already compiled elsewhere, stay exits, which keeps regions small and
/// quick to compile.
pub(crate) fn build(
    mem: &PhysMemory,
    entry_hpa: u64,
    entry: &[Inst],
    hot: impl Fn(u64) -> bool,
) -> Option<Region> {
    let n = entry.iter().take_while(|i| compilable(i)).count();
    if n == 0 {
        return None;
    }
    let page_off = (entry_hpa & (PAGE_SIZE - 1)) as i64;
    let mut region = Region {
        parts: vec![Part {
            delta: 0,
            insts: entry[..n].into(),
        }],
    };
    let mut next = 0;
    while next < region.parts.len() {
        let p = &region.parts[next];
        let base = p.delta;
        // A part cut short by an instruction only the interpreter runs "continues" there:
        // that target decodes to nothing compilable and stays an exit.
        for t in successors(&p.insts) {
            let delta = base + t;
            let off = page_off + delta;
            if !(0..PAGE_SIZE as i64).contains(&off)
                || region.find(delta).is_some()
                || region.parts.len() >= MAX_PARTS
                || !hot(entry_hpa.wrapping_add_signed(delta))
            {
                continue;
            }
            // The block there, up to the first instruction a region cannot contain.
            let insts = decode_block(mem, entry_hpa.wrapping_add_signed(delta), compilable);
            if !insts.is_empty() {
                region.parts.push(Part {
                    delta,
                    insts: insts.into_boxed_slice(),
                });
            }
        }
        next += 1;
    }
    Some(region)
}

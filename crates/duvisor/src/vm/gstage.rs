//! The guest's G-stage (stage-2) page table, Sv39x4, built and owned by DuVisor inside memory
//! the driver granted it. The hardware walks it; the PMC bounds what any entry can reach.

use dv_driver::MemoryGrant;
use dvext::csr::HGATP_MODE_SV39X4;

const PAGE: u64 = 4096;
const V: u64 = 1;
const R: u64 = 1 << 1;
const W: u64 = 1 << 2;
const X: u64 = 1 << 3;
const U: u64 = 1 << 4;
const A: u64 = 1 << 6;
const D: u64 = 1 << 7;
/// Leaf permissions for guest RAM: G-stage leaves must be U; A/D preset to spare updates.
pub const RAM_PERMS: u64 = V | R | W | X | U | A | D;
const ROOT_SIZE: u64 = 16 * 1024;
/// Sv39x4 guest-physical addresses are 41 bits.
pub const GPA_LIMIT: u64 = 1 << 41;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GStageError {
    #[error("out of G-stage page-table memory")]
    NoTableMemory,
    #[error("guest-physical address {0:#x} is beyond Sv39x4")]
    GpaTooLarge(u64),
    #[error("unaligned mapping {gpa:#x} -> {hpa:#x} of size {size:#x}")]
    Unaligned { gpa: u64, hpa: u64, size: u64 },
}

pub struct GStage {
    tables: MemoryGrant,
    next: u64,
    root: u64,
    mapped_bytes: u64,
}

impl GStage {
    /// Build an empty table in `tables` (a grant dedicated to page tables).
    pub fn new(tables: MemoryGrant) -> Result<Self, GStageError> {
        // The root must be 16 KiB aligned in host-physical memory.
        let pad = tables.hpa_base().next_multiple_of(ROOT_SIZE) - tables.hpa_base();
        if pad + ROOT_SIZE > tables.len() {
            return Err(GStageError::NoTableMemory);
        }
        Ok(GStage {
            tables,
            next: pad + ROOT_SIZE,
            root: pad,
            mapped_bytes: 0,
        })
    }

    /// hugatp value selecting this table (the hardware fixes the VMID field itself).
    pub fn hugatp(&self) -> u64 {
        (HGATP_MODE_SV39X4 << 60) | ((self.tables.hpa_base() + self.root) >> 12)
    }

    pub fn mapped_bytes(&self) -> u64 {
        self.mapped_bytes
    }

    fn alloc_table(&mut self) -> Result<u64, GStageError> {
        if self.next + PAGE > self.tables.len() {
            return Err(GStageError::NoTableMemory);
        }
        let t = self.next;
        self.next += PAGE;
        // Grants arrive zeroed, so the new table is all-invalid.
        Ok(t)
    }

    /// Map `[gpa, gpa+size)` to `[hpa, hpa+size)` with `perms`; `size` is 4 KiB or 2 MiB.
    /// Replaces whatever was mapped there at that granularity. The caller fences.
    pub fn map(&mut self, gpa: u64, hpa: u64, size: u64, perms: u64) -> Result<(), GStageError> {
        let level = match size {
            0x1000 => 0,
            0x20_0000 => 1,
            _ => return Err(GStageError::Unaligned { gpa, hpa, size }),
        };
        if gpa % size != 0 || hpa % size != 0 {
            return Err(GStageError::Unaligned { gpa, hpa, size });
        }
        if gpa.checked_add(size).is_none_or(|e| e > GPA_LIMIT) {
            return Err(GStageError::GpaTooLarge(gpa));
        }
        let mut table = self.root;
        for lvl in (level + 1..=2).rev() {
            let idx = (gpa >> (12 + 9 * lvl)) & if lvl == 2 { 0x7ff } else { 0x1ff };
            let pte_off = table + idx * 8;
            let pte = self
                .tables
                .load_u64(pte_off)
                .ok_or(GStageError::NoTableMemory)?;
            table = if pte & V != 0 && pte & (R | W | X) == 0 {
                ((pte >> 10) << 12) - self.tables.hpa_base()
            } else {
                let t = self.alloc_table()?;
                let next_hpa = self.tables.hpa_base() + t;
                self.tables.store_u64(pte_off, ((next_hpa >> 12) << 10) | V);
                t
            };
        }
        let idx = (gpa >> (12 + 9 * level)) & 0x1ff;
        let old = self.tables.load_u64(table + idx * 8).unwrap_or(0);
        self.tables
            .store_u64(table + idx * 8, ((hpa >> 12) << 10) | perms);
        if old & V == 0 {
            self.mapped_bytes += size;
        }
        Ok(())
    }

    /// Page-table memory needed to map `ram` bytes with 4 KiB pages, worst case.
    pub fn table_bytes_for(ram: u64) -> u64 {
        let l0 = ram.div_ceil(2 << 20) * PAGE;
        let l1 = ram.div_ceil(1 << 30) * PAGE + PAGE;
        ROOT_SIZE * 2 + l0 + l1 + PAGE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dv_driver::DvDriver;

    #[test]
    fn maps_4k_and_2m_and_reuses_tables() {
        let d = DvDriver::load(8 << 20).unwrap();
        let vm = d.create_vm().unwrap();
        let g = d.grant_memory(vm, 1 << 20).unwrap();
        let mut s = GStage::new(g.clone()).unwrap();
        s.map(0x8000_0000, 0x40_0000, 0x20_0000, RAM_PERMS).unwrap();
        s.map(0x8020_1000, 0x60_1000, 0x1000, RAM_PERMS).unwrap();
        s.map(0x8020_2000, 0x60_2000, 0x1000, RAM_PERMS).unwrap();
        // root + one L1 + one L0 table
        assert_eq!(s.next, s.root + ROOT_SIZE + 2 * PAGE);
        assert_eq!(s.mapped_bytes(), 0x20_0000 + 0x2000);
        assert!(matches!(
            s.map(0x8000_1000, 0, 0x20_0000, RAM_PERMS),
            Err(GStageError::Unaligned { .. })
        ));
        assert!(matches!(
            s.map(1 << 41, 0, 0x1000, RAM_PERMS),
            Err(GStageError::GpaTooLarge(_))
        ));
        assert_eq!(s.hugatp() >> 60, 8);
    }
}

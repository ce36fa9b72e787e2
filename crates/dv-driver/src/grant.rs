//! A range of host-physical memory granted to one VM: DuVisor's only view of host memory.
//! Every access is bounds-checked against the grant (offsets are relative to its base).

use std::sync::Arc;

use dvext::PhysMemory;

#[derive(Clone)]
pub struct MemoryGrant {
    mem: Arc<PhysMemory>,
    base: u64,
    len: u64,
}

impl std::fmt::Debug for MemoryGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryGrant({:#x}+{:#x})", self.base, self.len)
    }
}

impl MemoryGrant {
    pub(crate) fn new(mem: Arc<PhysMemory>, base: u64, len: u64) -> Self {
        MemoryGrant { mem, base, len }
    }

    /// Host-physical address of the first byte.
    pub fn hpa_base(&self) -> u64 {
        self.base
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn in_range(&self, off: u64, n: u64) -> bool {
        off.checked_add(n).is_some_and(|e| e <= self.len)
    }

    /// Copy out `buf.len()` bytes at `off`; false (nothing copied) if outside the grant.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> bool {
        self.in_range(off, buf.len() as u64) && self.mem.read(self.base + off, buf)
    }

    /// Copy in `buf` at `off`; false (nothing written) if outside the grant.
    pub fn write(&self, off: u64, buf: &[u8]) -> bool {
        self.in_range(off, buf.len() as u64) && self.mem.write(self.base + off, buf)
    }

    /// Host pointer to `[off, off + len)` of the grant, bounds-checked against it (and `len` > 0).
    /// The pointer stays valid as long as any clone of this grant lives (the grant keeps the
    /// arena alive). Writes through it bypass decoded-code invalidation: see
    /// [`PhysMemory::host_range`].
    pub fn host_range(&self, off: u64, len: u64) -> Option<*mut u8> {
        if !self.in_range(off, len) {
            return None;
        }
        self.mem.host_range(self.base + off, len)
    }

    /// Aligned 64-bit load (page-table entries).
    pub fn load_u64(&self, off: u64) -> Option<u64> {
        (self.in_range(off, 8) && off % 8 == 0).then(|| self.mem.load_u64(self.base + off))
    }

    /// Aligned 64-bit store (page-table entries); false if outside the grant or unaligned.
    pub fn store_u64(&self, off: u64, v: u64) -> bool {
        if !(self.in_range(off, 8) && off % 8 == 0) {
            return false;
        }
        self.mem.store_u64(self.base + off, v);
        true
    }
}

//! Host-physical memory: one arena owned by the hardware model.
//!
//! Host-physical addresses (HPAs) are offsets into the arena. Harts reach it only through
//! translations the PMC has checked; the driver hands DuVisor views of the ranges it granted.
//! Guest memory is shared between threads (vCPUs, I/O threads), so every access here is an
//! atomic or volatile-width access: racing guests get architecturally-valid results, never UB.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// The host-physical memory arena plus per-page bookkeeping for decoded-code invalidation.
pub struct PhysMemory {
    base: NonNull<u8>,
    size: usize,
    /// Per page: decoded blocks exist for this page (stores must take the slow path, which
    /// bumps `code_gen`, so self-modifying code is caught exactly).
    code: Box<[AtomicBool]>,
    /// Per page: bumped on every store to a code page; decoded blocks remember the value.
    code_gen: Box<[AtomicU32]>,
}

// SAFETY: the arena is plain memory accessed only through atomics / volatile-width copies, and
// the bookkeeping arrays are atomics; nothing in it is tied to a thread.
unsafe impl Send for PhysMemory {}
// SAFETY: as above: all shared access goes through atomic operations.
unsafe impl Sync for PhysMemory {}

impl std::fmt::Debug for PhysMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhysMemory")
            .field("size", &self.size)
            .finish()
    }
}

impl PhysMemory {
    /// Reserve `size` bytes (rounded up to a page) of zeroed host-physical memory. Pages are only
    /// backed by host RAM when first touched.
    pub fn new(size: u64) -> std::io::Result<Self> {
        let size = size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        if size == 0 || size > (1u64 << 46) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "host-physical memory size out of range",
            ));
        }
        let size = size as usize;
        // SAFETY: anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let pages = size >> PAGE_SHIFT;
        Ok(PhysMemory {
            base: NonNull::new(ptr.cast()).expect("mmap returned null"),
            size,
            code: (0..pages).map(|_| AtomicBool::new(false)).collect(),
            code_gen: (0..pages).map(|_| AtomicU32::new(0)).collect(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size as u64
    }

    /// Whether `[hpa, hpa + len)` lies inside the arena.
    #[inline]
    pub fn contains(&self, hpa: u64, len: u64) -> bool {
        hpa.checked_add(len)
            .is_some_and(|end| end <= self.size as u64)
    }

    /// Host pointer to `[hpa, hpa + len)` when that range lies inside the arena (and `len` > 0).
    ///
    /// This is how the real DuVisor reaches granted memory: the driver maps the granted pages
    /// into its address space, and its I/O threads (virtio back ends) copy to and from guest
    /// buffers directly. Stores made through this pointer do NOT invalidate decoded code blocks
    /// (unlike [`Self::write`]); that matches real hardware, where device DMA into a code page is
    /// only seen by a hart after it executes `fence.i`, and our `fence.i` revalidates every
    /// decoded block against memory, so a guest that follows the ISA's rules sees the new code.
    pub fn host_range(&self, hpa: u64, len: u64) -> Option<*mut u8> {
        (len > 0 && self.contains(hpa, len)).then(|| self.host_addr(hpa) as *mut u8)
    }

    /// Host address of `hpa`. Callers must have bounds-checked `hpa` (and PMC-checked it).
    #[inline(always)]
    pub(crate) fn host_addr(&self, hpa: u64) -> usize {
        debug_assert!(hpa < self.size as u64);
        self.base.as_ptr() as usize + hpa as usize
    }

    /// Inverse of [`Self::host_addr`].
    #[inline(always)]
    pub(crate) fn hpa_of_host(&self, host: usize) -> u64 {
        (host - self.base.as_ptr() as usize) as u64
    }

    // ---- Atomic accessors used by page-table walks (A/D updates) and devices. ----

    /// Aligned 64-bit load. Panics in debug if unaligned or out of range; callers check.
    pub fn load_u64(&self, hpa: u64) -> u64 {
        assert!(self.contains(hpa, 8) && hpa % 8 == 0, "bad PTE address");
        // SAFETY: in bounds and 8-aligned (checked above); the arena outlives `self`.
        unsafe { AtomicU64::from_ptr(self.host_addr(hpa) as *mut u64) }.load(Ordering::Acquire)
    }

    /// Aligned 64-bit compare-and-swap; returns the value found.
    pub fn cas_u64(&self, hpa: u64, old: u64, new: u64) -> u64 {
        assert!(self.contains(hpa, 8) && hpa % 8 == 0, "bad PTE address");
        // SAFETY: in bounds and 8-aligned (checked above).
        let a = unsafe { AtomicU64::from_ptr(self.host_addr(hpa) as *mut u64) };
        match a.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(v) | Err(v) => v,
        }
    }

    /// Aligned 64-bit store (used by DuVisor to write its G-stage tables).
    pub fn store_u64(&self, hpa: u64, val: u64) {
        assert!(self.contains(hpa, 8) && hpa % 8 == 0, "bad PTE address");
        self.note_store(hpa, 8);
        // SAFETY: in bounds and 8-aligned (checked above).
        unsafe { AtomicU64::from_ptr(self.host_addr(hpa) as *mut u64) }
            .store(val, Ordering::Release)
    }

    /// Copy out of the arena. Returns false (copying nothing) if out of range.
    pub fn read(&self, hpa: u64, buf: &mut [u8]) -> bool {
        if !self.contains(hpa, buf.len() as u64) {
            return false;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.load_u8_unchecked(hpa + i as u64);
        }
        true
    }

    /// Copy into the arena. Returns false (writing nothing) if out of range. Invalidates decoded
    /// code on the pages written, as a coherent DMA write would.
    pub fn write(&self, hpa: u64, buf: &[u8]) -> bool {
        if !self.contains(hpa, buf.len() as u64) {
            return false;
        }
        self.note_store(hpa, buf.len() as u64);
        for (i, b) in buf.iter().enumerate() {
            self.store_u8_unchecked(hpa + i as u64, *b);
        }
        true
    }

    /// Return `[hpa, hpa+len)` to the host (page-aligned): it reads as zero afterwards and no
    /// longer occupies host RAM. Returns false if the range is outside the arena or unaligned.
    pub fn discard(&self, hpa: u64, len: u64) -> bool {
        if !self.contains(hpa, len) || hpa % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 {
            return false;
        }
        self.note_store(hpa, len);
        // SAFETY: the range lies inside our private anonymous mapping (checked above);
        // MADV_DONTNEED on such a mapping only replaces the pages with zero-fill ones.
        unsafe {
            libc::madvise(
                (self.base.as_ptr() as usize + hpa as usize) as *mut libc::c_void,
                len as usize,
                libc::MADV_DONTNEED,
            ) == 0
        }
    }

    #[inline(always)]
    pub(crate) fn load_u8_unchecked(&self, hpa: u64) -> u8 {
        // SAFETY: callers guarantee `hpa` is inside the arena.
        unsafe { AtomicU8::from_ptr(self.host_addr(hpa) as *mut u8) }.load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub(crate) fn store_u8_unchecked(&self, hpa: u64, v: u8) {
        // SAFETY: callers guarantee `hpa` is inside the arena.
        unsafe { AtomicU8::from_ptr(self.host_addr(hpa) as *mut u8) }.store(v, Ordering::Relaxed)
    }

    /// Read a 16-bit parcel (instruction fetch). `hpa` must be in range and 2-aligned.
    #[inline(always)]
    pub(crate) fn load_u16_unchecked(&self, hpa: u64) -> u16 {
        // SAFETY: callers guarantee `hpa` is in range and 2-aligned.
        unsafe { AtomicU16::from_ptr(self.host_addr(hpa) as *mut u16) }.load(Ordering::Relaxed)
    }

    /// Little-endian read of `size` (1, 2, 4, 8) bytes; `[hpa, hpa+size)` must be in range.
    #[inline]
    pub(crate) fn read_sized(&self, hpa: u64, size: u64) -> u64 {
        debug_assert!(self.contains(hpa, size));
        let h = self.host_addr(hpa);
        if hpa % size == 0 {
            // SAFETY: in range (caller) and naturally aligned (checked).
            unsafe {
                match size {
                    1 => AtomicU8::from_ptr(h as *mut u8).load(Ordering::Relaxed) as u64,
                    2 => AtomicU16::from_ptr(h as *mut u16).load(Ordering::Relaxed) as u64,
                    4 => AtomicU32::from_ptr(h as *mut u32).load(Ordering::Relaxed) as u64,
                    _ => AtomicU64::from_ptr(h as *mut u64).load(Ordering::Relaxed),
                }
            }
        } else {
            (0..size).fold(0, |v, i| {
                v | (self.load_u8_unchecked(hpa + i) as u64) << (8 * i)
            })
        }
    }

    /// Little-endian write of the low `size` bytes of `v`; the range must be in the arena.
    /// Does not invalidate code (callers do, once per access).
    #[inline]
    pub(crate) fn write_sized(&self, hpa: u64, size: u64, v: u64) {
        debug_assert!(self.contains(hpa, size));
        let h = self.host_addr(hpa);
        if hpa % size == 0 {
            // SAFETY: in range (caller) and naturally aligned (checked).
            unsafe {
                match size {
                    1 => AtomicU8::from_ptr(h as *mut u8).store(v as u8, Ordering::Relaxed),
                    2 => AtomicU16::from_ptr(h as *mut u16).store(v as u16, Ordering::Relaxed),
                    4 => AtomicU32::from_ptr(h as *mut u32).store(v as u32, Ordering::Relaxed),
                    _ => AtomicU64::from_ptr(h as *mut u64).store(v, Ordering::Relaxed),
                }
            }
        } else {
            for i in 0..size {
                self.store_u8_unchecked(hpa + i, (v >> (8 * i)) as u8);
            }
        }
    }

    // ---- Decoded-code tracking ----

    /// Mark the page of `hpa` as holding decoded code; returns its current generation.
    pub(crate) fn mark_code(&self, hpa: u64) -> u32 {
        let page = (hpa >> PAGE_SHIFT) as usize;
        self.code[page].swap(true, Ordering::SeqCst);
        self.code_gen[page].load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub(crate) fn is_code(&self, hpa: u64) -> bool {
        self.code[(hpa >> PAGE_SHIFT) as usize].load(Ordering::Relaxed)
    }

    /// The generation counter of the page holding `hpa`, for compiled code to watch.
    pub(crate) fn code_gen_ptr(&self, hpa: u64) -> *const u32 {
        self.code_gen[(hpa >> PAGE_SHIFT) as usize].as_ptr()
    }

    #[inline(always)]
    pub(crate) fn code_gen(&self, hpa: u64) -> u32 {
        self.code_gen[(hpa >> PAGE_SHIFT) as usize].load(Ordering::Acquire)
    }

    /// The per-page "holds decoded code" flags (one byte each), for compiled stores.
    pub(crate) fn code_flags_ptr(&self) -> *const u8 {
        // AtomicBool has the size and bit validity of u8.
        self.code.as_ptr().cast()
    }

    /// Host address of host-physical address 0.
    pub(crate) fn base_addr(&self) -> usize {
        self.base.as_ptr() as usize
    }

    /// Whether the page holding host address `host` (inside the arena) has decoded code.
    #[inline(always)]
    pub(crate) fn is_code_host(&self, host: usize) -> bool {
        let page = (host - self.base.as_ptr() as usize) >> PAGE_SHIFT;
        self.code[page].load(Ordering::Relaxed)
    }

    /// A store is about to hit `[hpa, hpa+len)`: invalidate decoded code on those pages.
    #[inline]
    pub(crate) fn note_store(&self, hpa: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = (hpa >> PAGE_SHIFT) as usize;
        let last = ((hpa + len - 1) >> PAGE_SHIFT) as usize;
        for page in first..=last {
            if self.code[page].load(Ordering::Relaxed) {
                self.code[page].store(false, Ordering::Release);
                self.code_gen[page].fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

impl Drop for PhysMemory {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`; no references outlive `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_bounds() {
        let m = PhysMemory::new(3 * PAGE_SIZE).unwrap();
        assert_eq!(m.size(), 3 * PAGE_SIZE);
        assert!(m.write(PAGE_SIZE - 2, &[1, 2, 3, 4]));
        let mut b = [0u8; 4];
        assert!(m.read(PAGE_SIZE - 2, &mut b));
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(!m.write(3 * PAGE_SIZE - 1, &[0, 0]));
        assert!(!m.read(u64::MAX - 1, &mut b));
    }

    #[test]
    fn store_to_code_page_bumps_generation() {
        let m = PhysMemory::new(2 * PAGE_SIZE).unwrap();
        let g0 = m.mark_code(0x10);
        assert!(m.is_code(0));
        m.write(0x800, &[1]);
        assert!(!m.is_code(0));
        assert_ne!(m.code_gen(0), g0);
        assert_eq!(m.code_gen(PAGE_SIZE), 0);
    }
}

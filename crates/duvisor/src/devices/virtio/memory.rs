//! Guest RAM as the virtio back ends see it: a `vm-memory` `GuestMemoryMmap` over the host
//! mapping of the driver's RAM grant, so the rust-vmm `virtio-queue` crate can walk the rings
//! and the I/O threads can move data straight between files/sockets and guest buffers.
//!
//! Every access through it is bounds-checked by `vm-memory` against the one RAM region: an
//! address outside guest RAM (MMIO windows, holes, past the end) is an error, never a host
//! access. Stores made this way do not invalidate the hart's decoded code blocks; a guest
//! that loads code through a device executes `fence.i` before running it, and `fence.i`
//! revalidates every decoded block against memory (see `dvext::PhysMemory::host_range`).

use std::ops::Deref;

use dv_driver::MemoryGrant;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

pub struct GuestMem {
    mmap: GuestMemoryMmap,
    /// Keeps the arena behind `mmap`'s raw mapping alive for as long as `mmap` exists.
    _grant: Option<MemoryGrant>,
}

impl std::fmt::Debug for GuestMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GuestMem")
    }
}

impl GuestMem {
    /// Guest RAM at guest-physical `base`, backed by all of `grant`.
    pub fn from_grant(grant: MemoryGrant, base: u64) -> std::io::Result<GuestMem> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_string());
        let len = grant.len();
        let ptr = grant
            .host_range(0, len)
            .ok_or_else(|| bad("empty RAM grant"))?;
        // SAFETY: `ptr..ptr + len` is the host mapping of the whole grant (bounds-checked by
        // `host_range`): part of the hardware model's private anonymous read-write mapping,
        // which lives as long as any clone of the grant, and we store one next to `mmap`.
        // The region is marked borrowed (built from a raw pointer), so it is never unmapped here.
        let region = unsafe {
            MmapRegion::build_raw(
                ptr,
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            )
        }
        .map_err(|e| bad(&format!("mapping guest RAM for devices: {e}")))?;
        let region = GuestRegionMmap::new(region, GuestAddress(base))
            .ok_or_else(|| bad("guest RAM region wraps around"))?;
        let mmap = GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| bad(&format!("guest RAM for devices: {e}")))?;
        Ok(GuestMem {
            mmap,
            _grant: Some(grant),
        })
    }

    /// Anonymous memory at `base` (unit tests).
    pub fn anonymous(base: u64, size: usize) -> GuestMem {
        GuestMem {
            mmap: GuestMemoryMmap::from_ranges(&[(GuestAddress(base), size)])
                .expect("anonymous guest memory"),
            _grant: None,
        }
    }
}

impl Deref for GuestMem {
    type Target = GuestMemoryMmap;
    fn deref(&self) -> &GuestMemoryMmap {
        &self.mmap
    }
}

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
    /// Likewise for [`GuestMem::fenced`] (declared after `mmap`, so dropped after it).
    #[cfg(test)]
    _fence: Option<std::sync::Arc<Fence>>,
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
            #[cfg(test)]
            _fence: None,
        })
    }

    /// Anonymous memory at `base` (unit tests).
    pub fn anonymous(base: u64, size: usize) -> GuestMem {
        GuestMem {
            mmap: GuestMemoryMmap::from_ranges(&[(GuestAddress(base), size)])
                .expect("anonymous guest memory"),
            _grant: None,
            #[cfg(test)]
            _fence: None,
        }
    }

    /// `size` bytes of guest RAM at `base`, in the middle of a host mapping with `pad` bytes
    /// of [`FENCE_BYTE`] on each side (unit tests: [`Fence::intact`] then shows that no
    /// guest access reached host memory next to guest RAM).
    #[cfg(test)]
    pub fn fenced(base: u64, size: usize, pad: usize) -> (GuestMem, std::sync::Arc<Fence>) {
        let len = size + 2 * pad;
        // SAFETY: a new private anonymous mapping; no memory of ours is passed.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mapping fenced guest memory");
        let fence = std::sync::Arc::new(Fence {
            addr: p as usize,
            pad,
            size,
        });
        let start = p.cast::<u8>();
        // SAFETY: both pads and the RAM between them lie inside the `len`-byte read-write
        // mapping just made, which `fence` unmaps only after the last GuestMem holding it
        // (its region marked borrowed, so never unmapped by vm-memory) is gone.
        let region = unsafe {
            std::ptr::write_bytes(start, FENCE_BYTE, pad);
            std::ptr::write_bytes(start.add(pad + size), FENCE_BYTE, pad);
            MmapRegion::build_raw(
                start.add(pad),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            )
        }
        .expect("fenced guest memory region");
        let region = GuestRegionMmap::new(region, GuestAddress(base)).expect("guest RAM region");
        let mmap = GuestMemoryMmap::from_regions(vec![region]).expect("guest RAM");
        let mem = GuestMem {
            mmap,
            _grant: None,
            _fence: Some(fence.clone()),
        };
        (mem, fence)
    }
}

/// What the host bytes around [`GuestMem::fenced`] guest RAM hold.
#[cfg(test)]
pub const FENCE_BYTE: u8 = 0xa5;

/// The host mapping behind [`GuestMem::fenced`]: pad, guest RAM, pad.
#[cfg(test)]
pub struct Fence {
    addr: usize,
    pad: usize,
    size: usize,
}

#[cfg(test)]
impl Fence {
    /// Every host byte just before and just after guest RAM still holds [`FENCE_BYTE`].
    pub fn intact(&self) -> bool {
        let pads = [self.addr, self.addr + self.pad + self.size];
        pads.iter().all(|&a| {
            // SAFETY: each pad lies inside our live mapping and is no part of guest RAM, so
            // nothing else refers to it (a stray write into it is the bug this looks for).
            let pad = unsafe { std::slice::from_raw_parts(a as *const u8, self.pad) };
            pad.iter().all(|&b| b == FENCE_BYTE)
        })
    }
}

#[cfg(test)]
impl Drop for Fence {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `fenced` made; no GuestMem refers to it any more
        // (each holds an Arc of this Fence).
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.size + 2 * self.pad) };
    }
}

impl Deref for GuestMem {
    type Target = GuestMemoryMmap;
    fn deref(&self) -> &GuestMemoryMmap {
        &self.mmap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn fence_sees_writes_next_to_guest_ram_only() {
        let (mem, fence) = GuestMem::fenced(0x8000_0000, 0x10000, 4096);
        // Both ends of guest RAM are guest RAM, not fence.
        mem.write_slice(&[1; 16], GuestAddress(0x8000_0000))
            .unwrap();
        mem.write_slice(&[2; 16], GuestAddress(0x8000_fff0))
            .unwrap();
        assert!(mem.write_slice(&[3; 2], GuestAddress(0x8000_ffff)).is_err());
        assert!(fence.intact());
        let last = super::super::chain::host_ptr(
            &mem,
            super::super::chain::Seg {
                addr: 0x8000_ffff,
                len: 1,
            },
        )
        .unwrap();
        // SAFETY: one byte past guest RAM is the first byte of the fence's second pad,
        // inside the mapping `fence` keeps alive.
        unsafe { last.add(1).write(0) };
        assert!(!fence.intact());
    }
}

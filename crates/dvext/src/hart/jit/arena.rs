//! Memory for generated code, never writable and executable at once (W^X): one memfd mapped
//! twice, a read-write view the compiler copies code into and a read-execute view it runs from.
//!
//! Both views are made when the arena is created, which the VM plane does while it sets up the
//! VM, before its seccomp filter forbids executable mappings; after that, compiling a block is
//! a memory copy, with no system call.

use std::io;
use std::ptr::NonNull;

/// A bump allocator over a dual-mapped memfd.
pub(crate) struct CodeArena {
    rw: NonNull<u8>,
    rx: NonNull<u8>,
    size: usize,
    used: usize,
}

// SAFETY: the arena owns both mappings; the raw pointers are only dereferenced through
// `&mut self` (writes) or by calling code the owning hart placed there.
unsafe impl Send for CodeArena {}

/// Start of every function: the host's preferred alignment for branch targets.
const ALIGN: usize = 16;

impl CodeArena {
    /// Reserve `size` bytes (rounded up to a page) of code space. Pages take memory only once
    /// code is written to them.
    pub fn new(size: usize) -> io::Result<CodeArena> {
        let size = size.div_ceil(4096) * 4096;
        // SAFETY: a NUL-terminated name and valid flags; the descriptor is ours to close.
        let fd = unsafe { libc::memfd_create(c"dvext-jit".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let close = |fd| {
            // SAFETY: `fd` came from memfd_create above and is closed once.
            unsafe { libc::close(fd) };
        };
        // SAFETY: `fd` is a valid memfd.
        if unsafe { libc::ftruncate(fd, size as libc::off_t) } != 0 {
            let e = io::Error::last_os_error();
            close(fd);
            return Err(e);
        }
        let map = |prot| {
            // SAFETY: a fresh shared mapping of our own memfd, placed by the kernel.
            let p =
                unsafe { libc::mmap(std::ptr::null_mut(), size, prot, libc::MAP_SHARED, fd, 0) };
            if p == libc::MAP_FAILED {
                Err(io::Error::last_os_error())
            } else {
                Ok(p)
            }
        };
        let rw = map(libc::PROT_READ | libc::PROT_WRITE);
        let rx = map(libc::PROT_READ | libc::PROT_EXEC);
        close(fd); // the mappings keep the memory alive
        match (rw, rx) {
            (Ok(rw), Ok(rx)) => Ok(CodeArena {
                rw: NonNull::new(rw.cast()).expect("mmap returned null"),
                rx: NonNull::new(rx.cast()).expect("mmap returned null"),
                size,
                used: 0,
            }),
            (rw, rx) => {
                for p in [&rw, &rx].into_iter().flatten() {
                    // SAFETY: a mapping of `size` bytes made above.
                    unsafe { libc::munmap(*p, size) };
                }
                Err(rw.and(rx).unwrap_err())
            }
        }
    }

    /// Copy `code` in; its executable address, or None when the arena is full.
    pub fn push(&mut self, code: &[u8]) -> Option<usize> {
        let start = self.used.div_ceil(ALIGN) * ALIGN;
        let end = start.checked_add(code.len())?;
        if end > self.size {
            return None;
        }
        // SAFETY: `start..end` lies inside the read-write view, and no executable pointer into
        // this range has been handed out since the last `reset` (allocation only grows).
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.rw.as_ptr().add(start), code.len())
        };
        self.used = end;
        Some(self.rx.as_ptr() as usize + start)
    }

    /// Forget every function and give the memory back to the host. The caller must have
    /// dropped all pointers `push` returned.
    pub fn reset(&mut self) {
        let used = self.used.div_ceil(4096) * 4096;
        if used > 0 {
            // SAFETY: the first `used` bytes of our own shared mapping; MADV_REMOVE frees the
            // memfd's pages behind both views, which then read as zero. No code there runs.
            unsafe { libc::madvise(self.rw.as_ptr().cast(), used, libc::MADV_REMOVE) };
        }
        self.used = 0;
    }
}

impl Drop for CodeArena {
    fn drop(&mut self) {
        // SAFETY: both views were mapped with `size` bytes in `new` and are unmapped once.
        unsafe {
            libc::munmap(self.rw.as_ptr().cast(), self.size);
            libc::munmap(self.rx.as_ptr().cast(), self.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_written_through_one_view_runs_from_the_other() {
        let mut a = CodeArena::new(8192).unwrap();
        // x86-64: mov eax, 42; ret
        let f = a.push(&[0xb8, 42, 0, 0, 0, 0xc3]).unwrap();
        assert_eq!(f % ALIGN, 0);
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: the bytes above are a complete x86-64 function returning 42.
            let f: extern "C" fn() -> u32 = unsafe { std::mem::transmute(f) };
            assert_eq!(f(), 42);
        }
        assert!(a.push(&[0u8; 8192]).is_none(), "full");
        a.reset();
        assert_eq!(a.push(&[0xc3]), Some(f), "reset reuses the space");
    }
}

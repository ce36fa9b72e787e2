//! Memory for generated code, never writable and executable at once (W^X), and never writable
//! through memory at all: one memfd, mapped once read-execute, into which code is copied with
//! `pwrite` on the memfd's descriptor.
//!
//! The mapping is made when the arena is created, which the VM plane does while it sets up the
//! VM, before its seccomp filter forbids executable mappings. With no writable view, a stray or
//! hostile write through a memory-corruption bug elsewhere in the process cannot plant code the
//! executable view would run; only a `pwrite` on this descriptor can, which the VM plane's
//! filter allows the owning vCPU thread alone ([`CodeArena::fd`]). A writable view opened only
//! for each copy (`mprotect` before and after) gives the same protection but cost 55-62 us per
//! compiled region on this 2-core host, against 7-8 us for the `pwrite` and 6.6-8.5 us for a
//! copy into a permanently writable view (4000 pushes of 1500 bytes with another thread of the
//! process running on the other core), because taking write access away from a mapping
//! shoots down the other cores' TLBs.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;

/// A bump allocator over an executable memfd mapping, written through the memfd.
pub(crate) struct CodeArena {
    file: std::fs::File,
    rx: NonNull<u8>,
    size: usize,
    used: usize,
}

// SAFETY: the arena owns its mapping and descriptor; the raw pointer is only used to hand out
// addresses of code the owning hart placed there.
unsafe impl Send for CodeArena {}

/// Start of every function: the host's preferred alignment for branch targets.
const ALIGN: usize = 16;
/// The host's page: the unit of mappings.
const PAGE: usize = 4096;

impl CodeArena {
    /// Reserve `size` bytes (rounded up to a page) of code space. Pages take memory only once
    /// code is written to them.
    pub fn new(size: usize) -> io::Result<CodeArena> {
        let size = size.div_ceil(PAGE) * PAGE;
        // SAFETY: a NUL-terminated name and valid flags.
        let fd = unsafe { libc::memfd_create(c"dvext-jit".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let file =
            std::fs::File::from(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        file.set_len(size as u64)?;
        // SAFETY: a fresh shared mapping of our own memfd, placed by the kernel.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(CodeArena {
            file,
            rx: NonNull::new(p.cast()).expect("mmap returned null"),
            size,
            used: 0,
        })
    }

    /// The memfd code is written through: the only descriptor the owning vCPU thread may
    /// `pwrite` and `fallocate` once the VM plane's sandbox is on.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Copy `code` in; its executable address, or None when the arena is full (or the write
    /// failed, which only running out of memory can make it).
    pub fn push(&mut self, code: &[u8]) -> Option<usize> {
        let start = self.used.div_ceil(ALIGN) * ALIGN;
        let end = start.checked_add(code.len())?;
        if end > self.size {
            return None;
        }
        // No executable pointer into `start..end` has been handed out since the last `reset`
        // (allocation only grows), so nothing runs the bytes while they change.
        self.file.write_all_at(code, start as u64).ok()?;
        self.used = end;
        Some(self.rx.as_ptr() as usize + start)
    }

    /// Forget every function and give the memory back to the host. The caller must have
    /// dropped all pointers `push` returned.
    pub fn reset(&mut self) {
        let used = self.used.div_ceil(PAGE) * PAGE;
        if used > 0 {
            // SAFETY: a hole in our own memfd's first `used` bytes, size kept: its pages are
            // freed and read as zero through the mapping. No code there runs.
            unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    0,
                    used as libc::off_t,
                )
            };
        }
        self.used = 0;
    }
}

impl Drop for CodeArena {
    fn drop(&mut self) {
        // SAFETY: the mapping was made with `size` bytes in `new` and is unmapped once; the
        // descriptor closes with `file`.
        unsafe { libc::munmap(self.rx.as_ptr().cast(), self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_written_through_the_descriptor_runs_from_the_mapping() {
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

    /// The mappings of this process's memfd `dvext-jit` files: (start, permissions, Rss KiB).
    fn code_mappings() -> Vec<(usize, String, u64)> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut out = Vec::new();
        let mut lines = smaps.lines();
        while let Some(l) = lines.next() {
            if !l.contains("memfd:dvext-jit") {
                continue;
            }
            let mut f = l.split_whitespace();
            let start = usize::from_str_radix(f.next().unwrap().split('-').next().unwrap(), 16);
            let perms = f.next().unwrap().to_string();
            let rss = lines
                .by_ref()
                .find(|l| l.starts_with("Rss:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap();
            out.push((start.unwrap(), perms, rss));
        }
        out
    }

    #[test]
    fn code_is_never_writable_through_memory_and_is_counted_once() {
        let mut a = CodeArena::new(16 * PAGE).unwrap();
        let rx = a.rx.as_ptr() as usize;
        // 2.5 pages of code.
        let code: Vec<u8> = (0..PAGE * 5 / 2).map(|i| i as u8).collect();
        let f = a.push(&code).unwrap();
        // SAFETY: `f` points at `code.len()` bytes the arena holds (read, not run).
        let back = unsafe { std::slice::from_raw_parts(f as *const u8, code.len()) };
        assert_eq!(back, &code[..]);
        let g = a.push(&[0xc3; PAGE]).unwrap();
        // SAFETY: as above, `g` holds PAGE bytes.
        assert!(unsafe { std::slice::from_raw_parts(g as *const u8, PAGE) }
            .iter()
            .all(|&b| b == 0xc3));
        // Other tests' arenas may be mapped too: every code mapping is read-execute only, and
        // this one holds its 4 pages once.
        let maps = code_mappings();
        assert!(maps.iter().all(|(_, p, _)| p == "r-xs"), "{maps:?}");
        let mine = maps.iter().find(|(s, _, _)| *s == rx).expect("our mapping");
        assert_eq!(mine.2, 16, "{maps:?}");
        a.reset();
        let maps = code_mappings();
        let mine = maps.iter().find(|(s, _, _)| *s == rx).expect("our mapping");
        assert_eq!(mine.2, 0, "reset gives the pages back: {maps:?}");
    }
}

//! Memory for generated code, never writable and executable at once (W^X): one memfd mapped
//! twice, a writable view the compiler copies code into and a read-execute view it runs from.
//!
//! Both views are made when the arena is created, which the VM plane does while it sets up the
//! VM, before its seccomp filter forbids executable mappings. The writable view is
//! inaccessible (PROT_NONE) except for the pages a `push` or `reset` is writing, during that
//! call: a stray or hostile write through a memory-corruption bug elsewhere in the process
//! faults instead of planting code the other view would run. Opening and closing the pages
//! costs two `mprotect` calls per compiled region.

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
/// The host's page: the unit of mappings and `madvise`.
const PAGE: usize = 4096;

impl CodeArena {
    /// Reserve `size` bytes (rounded up to a page) of code space. Pages take memory only once
    /// code is written to them.
    pub fn new(size: usize) -> io::Result<CodeArena> {
        let size = size.div_ceil(PAGE) * PAGE;
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
        // Writable only while `push` or `reset` writes (a shared mapping of a file opened for
        // writing may be made writable later).
        let rw = map(libc::PROT_NONE);
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
        let (open_from, open_to) = (start / PAGE * PAGE, end.div_ceil(PAGE) * PAGE);
        self.writable(open_from, open_to, true).ok()?;
        // SAFETY: `start..end` lies inside the writable view, whose pages there were just made
        // writable, and no executable pointer into this range has been handed out since the
        // last `reset` (allocation only grows).
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.rw.as_ptr().add(start), code.len())
        };
        // Closing can only fail for lack of memory to split the mapping; the pages then stay
        // writable until the next push or reset closes them.
        let _ = self.writable(open_from, open_to, false);
        self.used = end;
        // Pages no later push writes to leave the writable view: the executable view keeps
        // them, and the host counted each such page twice in the resident set (the bench's
        // smp row compiles ~8 MiB of code; the soak test's 4 vCPUs up to 2 x 24 MiB).
        let (done_from, done_to) = (start / PAGE * PAGE, end / PAGE * PAGE);
        if done_to > done_from {
            // SAFETY: whole pages inside our own shared read-write view, which nothing reads
            // or writes again until `reset`; for a shared mapping MADV_DONTNEED only drops
            // this view's page table entries, the memfd keeps the bytes the other view runs.
            unsafe {
                libc::madvise(
                    self.rw.as_ptr().add(done_from).cast(),
                    done_to - done_from,
                    libc::MADV_DONTNEED,
                )
            };
        }
        Some(self.rx.as_ptr() as usize + start)
    }

    /// Forget every function and give the memory back to the host. The caller must have
    /// dropped all pointers `push` returned.
    pub fn reset(&mut self) {
        let used = self.used.div_ceil(PAGE) * PAGE;
        if used > 0 {
            // MADV_REMOVE needs a writable mapping.
            if self.writable(0, used, true).is_ok() {
                // SAFETY: the first `used` bytes of our own shared mapping; MADV_REMOVE frees
                // the memfd's pages behind both views, which then read as zero. No code there
                // runs.
                unsafe { libc::madvise(self.rw.as_ptr().cast(), used, libc::MADV_REMOVE) };
                let _ = self.writable(0, used, false);
            }
        }
        self.used = 0;
    }

    /// Make the writable view's pages `from..to` (page-aligned offsets) writable or
    /// inaccessible.
    fn writable(&mut self, from: usize, to: usize, open: bool) -> io::Result<()> {
        let prot = if open {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_NONE
        };
        // SAFETY: whole pages inside our own writable view; nothing holds a reference into it
        // (it is only written through `&mut self`).
        let r = unsafe { libc::mprotect(self.rw.as_ptr().add(from).cast(), to - from, prot) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
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

    /// The permissions of this process's mapping that starts at `addr` (from /proc/self/maps),
    /// e.g. `r-xs`.
    fn perms(addr: usize) -> String {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let start = format!("{addr:x}-");
        let line = maps
            .lines()
            .find(|l| l.starts_with(&start))
            .expect("mapping");
        line.split_whitespace().nth(1).unwrap().to_string()
    }

    #[test]
    fn the_writable_view_is_inaccessible_between_writes() {
        let mut a = CodeArena::new(16 * PAGE).unwrap();
        let (rw, rx) = (a.rw.as_ptr() as usize, a.rx.as_ptr() as usize);
        assert_eq!(perms(rw), "---s");
        assert_eq!(perms(rx), "r-xs");
        a.push(&[0xc3; 3 * PAGE / 2]).unwrap();
        assert_eq!(
            perms(rw),
            "---s",
            "after a push (and the mapping is whole again)"
        );
        a.reset();
        assert_eq!(perms(rw), "---s", "after a reset");
        assert_eq!(perms(rx), "r-xs");
        let f = a.push(&[0x90, 0xc3]).unwrap();
        // SAFETY: `f` points at the two bytes just pushed.
        assert_eq!(unsafe { *(f as *const [u8; 2]) }, [0x90, 0xc3]);
    }

    /// Resident KiB of this process's mapping that starts at `addr` (from /proc/self/smaps).
    fn resident_kib(addr: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let start = format!("{addr:x}-");
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start)).skip(1);
        let rss = lines
            .find(|l| l.starts_with("Rss:"))
            .expect("mapping in smaps");
        rss.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn filled_pages_stay_resident_only_in_the_executable_view() {
        let mut a = CodeArena::new(16 * PAGE).unwrap();
        let (rw, rx) = (a.rw.as_ptr() as usize, a.rx.as_ptr() as usize);
        // 2.5 pages of code: pages 0 and 1 are full and leave the writable view.
        let code: Vec<u8> = (0..PAGE * 5 / 2).map(|i| i as u8).collect();
        let f = a.push(&code).unwrap();
        assert_eq!(resident_kib(rw), 4, "only the partly filled page");
        // SAFETY: `f` points at `code.len()` bytes the arena holds (read, not run).
        let back = unsafe { std::slice::from_raw_parts(f as *const u8, code.len()) };
        assert_eq!(back, &code[..], "the executable view keeps every byte");
        assert_eq!(resident_kib(rx), 12);
        // The next push fills page 2 on, after the bytes already there.
        let g = a.push(&[0xc3; PAGE]).unwrap();
        // SAFETY: as above.
        let back = unsafe { std::slice::from_raw_parts(f as *const u8, code.len()) };
        assert_eq!(back, &code[..]);
        // SAFETY: as above, `g` holds PAGE bytes.
        assert!(unsafe { std::slice::from_raw_parts(g as *const u8, PAGE) }
            .iter()
            .all(|&b| b == 0xc3));
        assert_eq!(resident_kib(rw), 4);
    }
}
